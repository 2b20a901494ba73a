"""The local API: JSON lines over a Unix domain socket (docs/api.md).

``protocol``: requests, replies and events, without I/O (no trio); the server side:
``server``, with ``monitor``, ``replaying``, ``waiting`` and ``sockfile`` (trio). The
names are loaded on first use, so that a module of this package (the log fields of
``monitor``, used by the command line) does not bring the others.
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .monitor import MonitorHub
    from .protocol import (
        ERROR_CODES,
        MAX_TOPICS_PER_REQUEST,
        OPS,
        ApiError,
        Mesh,
        MessageEvent,
        Monitor,
        Peers,
        Publish,
        Request,
        Scalar,
        Status,
        Subscribe,
        Unsubscribe,
        check_topic,
        check_topics,
        encode_delivered,
        encode_error,
        encode_event,
        encode_reply,
        parse_request,
        parse_since,
        publish_payload,
        publish_target,
    )
    from .server import ApiBackend, ApiServer, ApiStats

__all__ = [
    "ERROR_CODES", "MAX_TOPICS_PER_REQUEST", "OPS", "ApiBackend", "ApiError", "ApiServer",
    "ApiStats", "Mesh", "MessageEvent", "Monitor", "MonitorHub", "Peers", "Publish", "Request",
    "Scalar", "Status", "Subscribe", "Unsubscribe", "check_topic", "check_topics",
    "encode_delivered", "encode_error", "encode_event", "encode_reply", "parse_request",
    "parse_since", "publish_payload", "publish_target",
]
__getattr__ = _lazy(__name__, {
    "monitor": ("MonitorHub",),
    "protocol": ("ERROR_CODES", "MAX_TOPICS_PER_REQUEST", "OPS", "ApiError", "Mesh",
                 "MessageEvent", "Monitor", "Peers", "Publish", "Request", "Scalar", "Status",
                 "Subscribe", "Unsubscribe", "check_topic", "check_topics", "encode_delivered",
                 "encode_error", "encode_event", "encode_reply", "parse_request",
                 "parse_since", "publish_payload", "publish_target"),
    "server": ("ApiBackend", "ApiServer", "ApiStats"),
})
