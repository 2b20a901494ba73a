"""Finding peers: mDNS on the local network (``mdns``, its service records in
``records``, the interfaces it may use in ``interfaces``); static peers come from the
config. The names are loaded on first use: zeroconf only when mDNS is used."""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .interfaces import choose_interfaces, suitable_ipv4_addresses
    from .mdns import MdnsDiscovery
    from .records import SERVICE_TYPE, BadRecord, DiscoveredPeer

__all__ = ["SERVICE_TYPE", "BadRecord", "DiscoveredPeer", "MdnsDiscovery", "choose_interfaces",
           "suitable_ipv4_addresses"]
__getattr__ = _lazy(__name__, {
    "interfaces": ("choose_interfaces", "suitable_ipv4_addresses"),
    "mdns": ("MdnsDiscovery",),
    "records": ("SERVICE_TYPE", "BadRecord", "DiscoveredPeer"),
})
