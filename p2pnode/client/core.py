"""The names ``p2pnode.client.core`` had before the clients were split into modules
(``protocol``, ``trio_client``, ``aio``, ``blocking``); import them from
``p2pnode.client``."""

from . import (
    ApiReplyError,
    BlockingClient,
    Client,
    UntrustedServer,
    check_server,
    event_payload,
    open_client,
    peers_request,
    publish_request,
)
from .protocol import MAX_LINE

__all__ = ["MAX_LINE", "ApiReplyError", "BlockingClient", "Client", "UntrustedServer",
           "check_server", "event_payload", "open_client", "peers_request", "publish_request"]
