"""The requests that the trio and asyncio clients share: each built on ``request``."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .membership import members_request, tags_request
from .protocol import (
    ApiReplyError,
    ack_request,
    event_payload,
    peers_request,
    subscribe_request,
    unsubscribe_request,
    will_request,
)
from .serving import DEFAULT_ASK_TIMEOUT, ReplyError, ask_request, reply_request

#: A ``serve`` handler: the request's payload in, the reply's data out (or it raises).
Handler = Callable[[bytes], Awaitable[str | bytes]]


class AsyncRequests:
    """``subscribe``, ``unsubscribe``, ``peers``, ``status``, ``monitor``, ``members``,
    ``set_tags``: one request each, whose checked reply they return (``ApiReplyError``
    on an error reply)."""

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def subscribe(self, topics: list[str] | None = None,
                        since: str | float | None = None, *, retained: bool = True,
                        durable: str | None = None, max_unacked: int | None = None,
                        seen: list[str] | None = None) -> dict[str, Any]:
        """Subscribe to ``topics`` (all topics if empty or None). The topics' retained
        messages come first (events with ``"retained": true``; not with
        ``retained=False``). With ``since`` (a message id, or a Unix time), the node then
        replays the matching messages of its history that came after it (events with
        ``"replay": true``); ``seen`` (with ``since`` a message id: the last message id
        the app got of each origin run, see docs/api.md) leaves out those and the
        earlier ones of their runs, live too. Both come before the reply and are kept for
        ``next_event``. Returns the reply (with ``retained``, the number of retained
        events, and ``replayed``, when ``since`` was given). ``ApiReplyError`` with code
        ``rate_limited`` past the node's replay rate (docs/api.md).

        With ``durable`` (a name: 1-64 of ``A-Z a-z 0-9 _ . -``), a durable subscription
        (docs/store.md): created, or resumed where it was acked, fed from the node's
        message store; its message events carry ``durable``; confirm them with ``ack``.
        At most ``max_unacked`` (default: the node's maximum) are delivered and not acked.
        ``ApiError`` codes ``durable_busy``, ``store_off``, ``too_many_durables``."""
        return await self.request(subscribe_request(topics, since, retained, durable,
                                                    max_unacked, seen=seen))

    async def ack(self, event: dict[str, Any]) -> None:
        """Confirm the message ``event`` of a durable subscription, and every one
        delivered before it (a resumed subscription starts after it)."""
        await self.request(ack_request(event))

    async def set_will(self, topic: str, data: str | bytes, *, retain: bool = False) -> None:
        """Set this connection's last will: the node publishes ``data`` on ``topic``
        (``retain``: as the topic's retained message) if the connection ends without
        the client being closed normally (the app crashed, was killed, or left the
        ``async with`` block by an exception). Replaces an earlier will. Raises
        ``ApiReplyError`` (``too_large`` over 64 KiB, ``bad_request``)."""
        await self.request(will_request(topic, data, retain=retain))

    async def clear_will(self) -> None:
        """Remove this connection's last will."""
        await self.request(will_request())

    async def unsubscribe(self, topics: list[str] | None = None, *,
                          durable: str | None = None, delete: bool = False) -> None:
        """Stop receiving ``topics`` (every topic if empty or None); or, with ``durable``,
        that durable subscription (its position is kept; ``delete``: removed)."""
        await self.request(unsubscribe_request(topics, durable, delete))

    async def peers(self, wait_min: int | None = None, wait_max: int | None = None,
                    wait_timeout: float = 10.0) -> list[dict[str, Any]]:
        """The linked peers; with ``wait_min``/``wait_max``, once their number is within
        those bounds (``ApiReplyError`` code ``timeout`` after ``wait_timeout`` seconds)."""
        return list((await self.request(peers_request(wait_min, wait_max, wait_timeout)))["peers"])

    async def status(self) -> dict[str, Any]:
        """The node's ``status`` reply (docs/api.md)."""
        return await self.request({"op": "status"})

    async def monitor(self, level: str = "info", messages: bool = False) -> None:
        """Start receiving ``log`` and ``link`` events (and ``delivered`` events with
        ``messages``) from ``events()``; see docs/api.md, "monitor"."""
        await self.request({"op": "monitor", "level": level, "messages": messages})

    async def members(self, tags: Mapping[str, str] | None = None,
                      state: str | Iterable[str] | None = None, *,
                      watch: bool | None = None) -> list[dict[str, Any]]:
        """The members of the mesh, this node included (``"self": true``), sorted by
        name: those with all of ``tags`` and in ``state`` (``"alive"``, ``"suspect"``,
        ``"dead"``, ``"left"``, or several). With ``watch=True``, ``events()`` then gives
        a ``member_join``, ``member_update``, ``member_suspect``, ``member_dead`` or
        ``member_left`` event at each change (``watch=False``: no longer). Raises
        ``ApiReplyError`` (``bad_request``: a bad tag or state)."""
        return list((await self.request(members_request(tags, state, watch)))["members"])

    async def set_tags(self, tags: Mapping[str, str] | None = None,
                       delete: Iterable[str] = ()) -> dict[str, str]:
        """Set ``tags`` and delete the keys ``delete`` of this node's tags; returns its
        tags then. The change travels to every node (a ``member_update`` event). Raises
        ``ApiReplyError``: ``bad_request`` (a key is 1-64 of ``A-Z a-z 0-9 _ . -``, a
        value at most 256 characters, at most 32 tags), ``rate_limited`` (over 10
        changes per second)."""
        return dict((await self.request(tags_request(tags, delete)))["tags"])

    async def ask(self, topic: str, data: str | bytes, *,
                  timeout: float = DEFAULT_ASK_TIMEOUT,  # noqa: ASYNC109 - the node's, sent
                  max_replies: int = 1) -> list[dict[str, Any]]:
        """Send a request on ``topic`` to the apps that serve it on every node (the
        ``request`` op) and return their replies: once ``max_replies`` came, or when
        ``timeout`` seconds have passed (at most the node's maximum, 60 s), those that
        came; none is an empty list, not an error. Each reply is a dict: ``from`` (the
        replying node's id), ``name`` (its name), and ``data`` or ``data_b64``
        (``event_payload(reply)`` gives the bytes), or ``error`` (its app failed).
        Other requests of this client go on meanwhile. Raises ``ApiReplyError``:
        ``bad_request`` (a timeout over the maximum, a bad topic), ``too_large``,
        ``too_many_requests`` (64 waiting on this connection, or 1,024 on the node)."""
        reply = await self.request(ask_request(topic, data, timeout, max_replies))
        return list(reply["replies"])

    async def _answer(self, handler: Handler, event: dict[str, Any], token: str,
                      release: Callable[[], None]) -> None:
        """Run ``handler`` on one request event and send its reply: its result, or an
        error reply if it raised. A reply the node refuses because the request is gone
        (its timeout passed) is dropped; another refusal (a reply too large, say) is
        answered with an error reply."""
        try:
            try:
                result: object = await handler(event_payload(event))
            except Exception as exc:
                result = exc
            try:
                await self.request(reply_request(token, result))
            except ApiReplyError as err:
                if err.code != "request_gone":
                    with contextlib.suppress(ApiReplyError):
                        await self.request(reply_request(
                            token, ReplyError(f"the reply was refused: {err.message}")))
        except self._ended:
            pass  # the connection ended: ``serve`` returns
        finally:
            release()

    #: What ``request`` raises once the connection has ended (per client).
    _ended: tuple[type[BaseException], ...] = (ConnectionError,)
