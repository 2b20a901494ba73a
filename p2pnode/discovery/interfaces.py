"""Which addresses mDNS binds to when none are configured (Linux).

Reads the interface table of the calling thread's network namespace with two ioctls;
it sends nothing. See ``docs/discovery.md`` (interface choice).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from typing import Final

from ..errors import ConfigError

# See <linux/sockios.h> and <linux/if.h>.
_SIOCGIFFLAGS: Final = 0x8913
_SIOCGIFADDR: Final = 0x8915
_IFF_UP: Final = 0x1
_IFF_LOOPBACK: Final = 0x8
_IFF_MULTICAST: Final = 0x1000


def _ipv4_interfaces(*, suitable_only: bool) -> list[tuple[str, str]]:
    """(interface name, primary IPv4 address) of every interface that is up (and, with
    ``suitable_only``, multicast-capable and not loopback)."""
    found: list[tuple[str, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, ifname in socket.if_nameindex():
            request = struct.pack("16s24x", ifname.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 16)[0]
                if not flags & _IFF_UP:
                    continue
                if suitable_only and (flags & _IFF_LOOPBACK or not flags & _IFF_MULTICAST):
                    continue
                reply = fcntl.ioctl(sock, _SIOCGIFADDR, request)
            except OSError:  # vanished meanwhile, or no IPv4 address
                continue
            found.append((ifname, socket.inet_ntoa(reply[20:24])))
    return found


def suitable_ipv4_addresses() -> tuple[str, ...]:
    """Return the primary IPv4 address of every up, multicast-capable, non-loopback interface.

    Linux only (``SIOCGIFFLAGS``/``SIOCGIFADDR``); reads the calling thread's network
    namespace and sends nothing. Secondary addresses of an interface are not listed.
    """
    return tuple(addr for _name, addr in _ipv4_interfaces(suitable_only=True))


def interface_summary() -> str:
    """The interfaces that are up, with their primary IPv4 addresses, for messages:
    ``"lo 127.0.0.1, eth0 192.168.1.20"`` (``"none"`` without any)."""
    return ", ".join(f"{name} {addr}" for name, addr in
                     _ipv4_interfaces(suitable_only=False)) or "none"


def is_local_address(text: str) -> bool:
    """Whether ``text``, an IP address, belongs to an interface of this machine (in the
    calling thread's network namespace). Binds a UDP socket to it and sends nothing;
    only "cannot assign requested address" counts as not local."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((text, 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


def choose_interfaces(interfaces: tuple[str, ...]) -> tuple[str, ...]:
    """Return the IP addresses mDNS binds to.

    ``interfaces`` are IP addresses (``--mdns-interface``); empty means every suitable
    interface (``suitable_ipv4_addresses``). Raises ``ConfigError`` on a malformed,
    unspecified or multicast address, or when nothing suitable is found.
    """
    for text in interfaces:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(f"mDNS interface must be an IP address: {text!r}") from None
        if addr.is_unspecified or addr.is_multicast:
            raise ConfigError(f"mDNS interface must be a unicast address: {text!r}")
    chosen = interfaces or suitable_ipv4_addresses()
    if not chosen:
        raise ConfigError(
            "no interface suitable for mDNS (up, multicast, non-loopback, with IPv4); "
            "pass --mdns-interface IP, or --no-mdns with --peer HOST:PORT"
        )
    return chosen
