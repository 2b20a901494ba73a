"""Who a node is: its key pair (``keypair``, pure), key files and certificates (``keys``),
its data directory and lock (``datadir``), and the ownership checks of local paths and
sockets (``owners``).

The names are loaded on first use, so that what needs only the key pair (the gossip
core) or only the ownership checks (the clients) does not load X.509.
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .datadir import DataDirLock, prepare_data_dir
    from .keypair import NodeIdentity, node_id_of
    from .keys import (
        NetworkKey,
        generate_network_key,
        load_or_create_identity,
        network_ca_pem,
        node_cert_pem,
        private_key_pem,
    )
    from .owners import check_server, ensure_private_dir

__all__ = ["DataDirLock", "NetworkKey", "NodeIdentity", "check_server", "ensure_private_dir",
           "generate_network_key", "load_or_create_identity", "network_ca_pem",
           "node_cert_pem", "node_id_of", "prepare_data_dir", "private_key_pem"]
__getattr__ = _lazy(__name__, {
    "datadir": ("DataDirLock", "prepare_data_dir"),
    "keypair": ("NodeIdentity", "node_id_of"),
    "keys": ("NetworkKey", "generate_network_key", "load_or_create_identity",
             "network_ca_pem", "node_cert_pem", "private_key_pem"),
    "owners": ("check_server", "ensure_private_dir"),
})
