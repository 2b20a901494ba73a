"""Python clients for a node's local API (see ``core``)."""

from .core import (
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

__all__ = ["ApiReplyError", "BlockingClient", "Client", "UntrustedServer", "check_server",
           "event_payload", "open_client", "peers_request", "publish_request"]
