"""trio adapters for the node's network side: transports (``transport``, and TLS in
``tls``), one link per connection (``link``), its outgoing queue (``outqueue``), the
connection manager (``manager``), and why links fail (``failures``)."""

from .failures import Failure, FailureLog, LinkFailureError
from .link import Direction, LinkHost, LinkResult, PeerLink, run_connection
from .manager import LinkManager, LinkStats
from .outqueue import OutQueue
from .tls import TlsStats, TlsTransport, make_contexts, verified_peer_id
from .transport import StreamHandler, TcpTransport, Transport

__all__ = ["Direction", "Failure", "FailureLog", "LinkFailureError", "LinkHost", "LinkManager",
           "LinkResult", "LinkStats", "OutQueue", "PeerLink", "StreamHandler", "TcpTransport",
           "TlsStats", "TlsTransport", "Transport", "make_contexts", "run_connection",
           "verified_peer_id"]
