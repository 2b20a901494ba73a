"""The local API: JSON lines over a Unix domain socket (docs/api.md).

``protocol``: requests, replies and events, and ``topics``: topic levels and wildcard
patterns, without I/O (no trio); the server side:
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
        check_pattern,
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
    from .server import ApiBackend, ApiServer
    from .session import ApiStats, Session
    from .subscribing import MAX_TOPICS_PER_CLIENT
    from .topics import (
        MAX_PATTERN_LEVELS,
        PatternIndex,
        TopicFilter,
        is_pattern,
        pattern_problem,
        published_topic_problem,
        topic_matches,
    )

__all__ = [
    "ERROR_CODES", "MAX_PATTERN_LEVELS", "MAX_TOPICS_PER_CLIENT", "MAX_TOPICS_PER_REQUEST",
    "OPS", "ApiBackend", "ApiError", "ApiServer", "ApiStats", "Mesh", "MessageEvent",
    "Monitor", "MonitorHub", "PatternIndex", "Peers", "Publish", "Request", "Scalar",
    "Session", "Status", "Subscribe",
    "TopicFilter", "Unsubscribe", "check_pattern", "check_topic", "check_topics",
    "encode_delivered", "encode_error", "encode_event", "encode_reply", "is_pattern",
    "parse_request", "parse_since", "pattern_problem", "publish_payload", "publish_target",
    "published_topic_problem", "topic_matches",
]
__getattr__ = _lazy(__name__, {
    "monitor": ("MonitorHub",),
    "protocol": ("ERROR_CODES", "MAX_TOPICS_PER_REQUEST", "OPS", "ApiError", "Mesh",
                 "MessageEvent", "Monitor", "Peers", "Publish", "Request", "Scalar", "Status",
                 "Subscribe", "Unsubscribe", "check_topic", "check_topics", "encode_delivered",
                 "encode_error", "encode_event", "encode_reply", "parse_request",
                 "parse_since", "publish_payload", "publish_target", "check_pattern"),
    "server": ("ApiBackend", "ApiServer"),
    "session": ("ApiStats", "Session"),
    "subscribing": ("MAX_TOPICS_PER_CLIENT",),
    "topics": ("MAX_PATTERN_LEVELS", "PatternIndex", "TopicFilter", "is_pattern",
               "pattern_problem", "published_topic_problem", "topic_matches"),
})
