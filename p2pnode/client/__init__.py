"""Python clients for a node's local API (docs/api.md, "Python").

- ``open_client`` / ``Client``: trio.
- ``open_asyncio_client`` / ``AsyncioClient``: asyncio (also ``p2pnode.client.aio``,
  as ``open_client`` there).
- ``BlockingClient``: plain sockets, for scripts.

All three pipeline ``publish`` (it returns without waiting for the node's reply;
``flush()`` waits for the replies), read events in bulk, and check who serves the
socket before they send anything (``check_server``).
"""

from ..errors import UntrustedServer
from ..identity.owners import check_server
from .aio import AsyncioClient
from .aio import open_client as open_asyncio_client
from .blocking import BlockingClient
from .protocol import (
    ApiReplyError,
    ConnectionClosed,
    ProtocolViolation,
    PublishError,
    Refusal,
    event_payload,
    peers_request,
    publish_request,
)
from .serving import ReplyError
from .trio_client import Client, open_client

__all__ = ["ApiReplyError", "AsyncioClient", "BlockingClient", "Client", "ConnectionClosed",
           "ProtocolViolation", "PublishError", "Refusal", "ReplyError", "UntrustedServer",
           "check_server",
           "event_payload", "open_asyncio_client", "open_client", "peers_request",
           "publish_request"]
