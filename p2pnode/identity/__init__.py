"""Who a node is: its key pair (``keypair``, pure), key files and certificates (``keys``),
its data directory and lock (``datadir``), and the ownership checks of local paths and
sockets (``owners``)."""

from .keypair import NodeIdentity, node_id_of
from .keys import NetworkKey, generate_network_key, load_or_create_identity

__all__ = ["NetworkKey", "NodeIdentity", "generate_network_key", "load_or_create_identity",
           "node_id_of"]
