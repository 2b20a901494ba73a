"""The mDNS service record of a node: its name, its TXT records, and their validation.

Pure functions, no I/O: what a node advertises and how a record received from the
network is checked before it becomes a ``DiscoveredPeer``. See ``docs/discovery.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import zeroconf

from ..ids import parse_id

SERVICE_TYPE: Final = "_p2pnode._tcp.local."
#: Largest DNS label, in bytes: the bound for the instance name.
MAX_INSTANCE_BYTES: Final = 63
#: Bytes kept free in the label for zeroconf's renaming on a conflict (``-2`` ... ``-999``).
RENAME_ROOM: Final = 4
#: Largest network tag, in UTF-8 bytes.
MAX_NETWORK_BYTES: Final = 64
#: Largest node name, in UTF-8 bytes (matches ``NodeConfig.name``).
MAX_NAME_BYTES: Final = 64


class BadRecord(ValueError):
    """A service record received from the network is malformed (the remote's fault)."""


@dataclasses.dataclass(frozen=True)
class DiscoveredPeer:
    """A peer found by mDNS: who it is and where to dial it."""

    node_id: str  # 32 lowercase hex
    name: str
    addrs: tuple[tuple[str, int], ...]  # (host, port); IPv4 first, then global IPv6
    version: int
    network: str


def instance_name(name: str, node_id: str) -> str:
    """Return the service instance label for a node: ``<name>-<id[:8]>``.

    Dots, backslashes and unprintable characters in ``name`` become ``-``; the name part
    is cut (on a UTF-8 character boundary) so the label stays within one DNS label
    (63 bytes) even after zeroconf appends ``-N`` to resolve a name conflict.
    """
    suffix = "-" + node_id[:8]
    clean = "".join(ch if ch.isprintable() and ch not in ".\\" else "-" for ch in name).strip()
    budget = MAX_INSTANCE_BYTES - RENAME_ROOM - len(suffix)
    cut = (clean or "p2pnode").encode("utf-8", "replace")[:budget].decode("utf-8", "ignore")
    return cut + suffix


def txt_properties(*, node_id: str, name: str, version: int, network: str) -> dict[str, str]:
    """Return the TXT key/value pairs a node advertises."""
    return {"id": node_id, "v": str(version), "net": network, "name": name}


def _txt_text(props: dict[bytes, bytes | None], key: bytes, max_bytes: int) -> str | None:
    """Return TXT value ``key`` as printable text, ``None`` if absent; raise ``BadRecord``."""
    raw = props.get(key)
    if raw is None:
        return None
    if len(raw) > max_bytes:
        raise BadRecord(f"TXT {key.decode()} longer than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord(f"TXT {key.decode()} is not UTF-8") from None
    if not text.isprintable():
        raise BadRecord(f"TXT {key.decode()} is not printable")
    return text


def _peer_addrs(info: zeroconf.ServiceInfo, port: int) -> tuple[tuple[str, int], ...]:
    """Return the dialable addresses of ``info``: IPv4 first, then non-link-local IPv6."""
    out: list[tuple[str, int]] = []
    for version in (zeroconf.IPVersion.V4Only, zeroconf.IPVersion.V6Only):
        for addr in info.ip_addresses_by_version(version):
            if addr.is_unspecified or addr.is_multicast or addr.is_link_local:
                continue
            out.append((str(addr), port))
    return tuple(out)


def peer_from_info(info: zeroconf.ServiceInfo) -> DiscoveredPeer:
    """Validate a resolved service and turn it into a ``DiscoveredPeer``.

    Required: TXT ``id`` (32 hex digits, any case) and ``v`` (a decimal integer), a port
    and at least one usable address. ``net`` defaults to ``""`` and ``name`` to the
    instance label. Raises ``BadRecord`` naming the first problem found.
    """
    props = info.properties
    id_text = _txt_text(props, b"id", 32)
    if id_text is None:
        raise BadRecord("TXT id missing")
    try:
        node_id = parse_id(id_text).hex()
    except ValueError:
        raise BadRecord("TXT id is not 32 hex digits") from None
    version_text = _txt_text(props, b"v", 9)
    if version_text is None or not (version_text.isascii() and version_text.isdigit()):
        raise BadRecord("TXT v missing or not a non-negative integer")
    network = _txt_text(props, b"net", MAX_NETWORK_BYTES) or ""
    name = _txt_text(props, b"name", MAX_NAME_BYTES) or info.get_name()
    port = info.port
    if port is None or not 1 <= port <= 65535:
        raise BadRecord("no valid port")
    addrs = _peer_addrs(info, port)
    if not addrs:
        raise BadRecord("no usable address")
    return DiscoveredPeer(node_id, name, addrs, int(version_text), network)
