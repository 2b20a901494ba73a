"""Request/reply for the clients, without I/O: the requests ``ask`` and ``serve`` send,
and how a handler's result or failure becomes a reply (docs/api.md, "request")."""

from __future__ import annotations

import base64
from typing import Any, Final

#: How long ``ask`` waits for replies by default (seconds), as the node does.
DEFAULT_ASK_TIMEOUT: Final = 5.0
#: Handlers ``serve`` runs at once by default.
DEFAULT_CONCURRENCY: Final = 16
#: The longest error text a reply carries (characters; the node refuses longer ones).
MAX_ERROR: Final = 1024
#: The largest reply data a handler's result may be (a node's default ``max_payload``):
#: a larger one is answered with an error reply, rather than sent as a request line
#: the node might refuse by closing the connection.
MAX_REPLY: Final = 512 * 1024


class ReplyError(Exception):
    """Raise it in a ``serve`` handler to answer with an error reply whose text is this
    exception's message, as it is (other exceptions are sent as ``Type: message``)."""


def ask_request(topic: str, data: str | bytes, timeout: float,
                max_replies: int) -> dict[str, Any]:
    """A ``request`` request: text goes as ``data``, other bytes as ``data_b64``."""
    req: dict[str, Any] = {"op": "request", "topic": topic}
    _put_data(req, data)
    req["timeout"] = timeout
    req["max_replies"] = max_replies
    return req


def request_token(event: dict[str, Any], topics: frozenset[str] | None = None) -> str | None:
    """The ``reply_to`` token of a request event (of ``topics``, if given), else None."""
    token = event.get("reply_to")
    if event.get("event") != "message" or not isinstance(token, str):
        return None
    if topics is not None and event.get("topic") not in topics:
        return None
    return token


def reply_request(token: str, result: object) -> dict[str, Any]:
    """The ``reply`` request that answers ``token`` with a handler's ``result``: a str
    or bytes is the reply's data (unless it is over ``MAX_REPLY`` bytes); an exception
    (or anything else) an error reply."""
    req: dict[str, Any] = {"op": "reply", "reply_to": token}
    if isinstance(result, str | bytes | bytearray | memoryview):
        data = result.encode("utf-8", "surrogatepass") if isinstance(result, str) \
            else bytes(result)
        if len(data) > MAX_REPLY:
            req["error"] = (f"the handler's reply of {len(data)} bytes is over the "
                            f"{MAX_REPLY} a reply may carry")
        else:
            _put_data(req, result if isinstance(result, str) else data)
    else:
        req["error"] = error_text(result)
    return req


def error_text(failure: object) -> str:
    """What an error reply says about ``failure``: a ``ReplyError``'s message as it is,
    another exception as ``Type: message``, anything else (a handler that returned
    neither str nor bytes) as what it was."""
    if isinstance(failure, ReplyError):
        text = str(failure)
    elif isinstance(failure, BaseException):
        text = f"{type(failure).__name__}: {failure}".rstrip(": ")
    else:
        text = f"the handler returned {type(failure).__name__}, not str or bytes"
    return text[:MAX_ERROR] or "error"


def _put_data(req: dict[str, Any], data: str | bytes) -> None:
    if isinstance(data, str):
        req["data"] = data
        return
    try:
        req["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        req["data_b64"] = base64.b64encode(data).decode("ascii")
