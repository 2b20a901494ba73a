"""Python clients for a node's local API (docs/api.md, "Python").

- ``open_client`` / ``Client``: trio.
- ``open_asyncio_client`` / ``AsyncioClient``: asyncio (also ``p2pnode.client.aio``,
  as ``open_client`` there).
- ``BlockingClient``: plain sockets, for scripts.
- ``open_subscription``, ``open_asyncio_subscription``, ``BlockingSubscription``: a
  subscription that reconnects when the node restarts and resumes where it was
  (``subscription``).

All three pipeline ``publish`` (it returns without waiting for the node's reply;
``flush()`` waits for the replies), read events in bulk, and check who serves the
socket before they send anything (``check_server``). Closed normally, they send
``bye``: the node then publishes no last will for the connection (``set_will``), which
it does only when an app ends without closing its client (a crash, ``kill -9``, an
exception out of the ``with`` block).
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
    will_request,
)
from .resume import PublishesLost, Reconnect, ReconnectFailed
from .serving import ReplyError
from .subscription import (
    AsyncSubscription,
    BlockingSubscription,
    open_asyncio_subscription,
    open_subscription,
)
from .trio_client import Client, open_client

__all__ = ["ApiReplyError", "AsyncSubscription", "AsyncioClient", "BlockingClient",
           "BlockingSubscription", "Client", "ConnectionClosed", "ProtocolViolation",
           "PublishError", "PublishesLost", "Reconnect", "ReconnectFailed", "Refusal",
           "ReplyError", "UntrustedServer", "check_server", "event_payload",
           "open_asyncio_client", "open_asyncio_subscription", "open_client",
           "open_subscription", "peers_request", "publish_request", "will_request"]
