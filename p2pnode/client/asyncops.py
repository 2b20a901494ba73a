"""The requests that the trio and asyncio clients share: each built on ``request``."""

from __future__ import annotations

from typing import Any

from .protocol import peers_request, subscribe_request, will_request


class AsyncRequests:
    """``subscribe``, ``unsubscribe``, ``peers``, ``status``, ``monitor``: one request
    each, whose checked reply they return (``ApiReplyError`` on an error reply)."""

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def subscribe(self, topics: list[str] | None = None,
                        since: str | float | None = None, *,
                        retained: bool = True) -> dict[str, Any]:
        """Subscribe to ``topics`` (all topics if empty or None). The topics' retained
        messages come first (events with ``"retained": true``; not with
        ``retained=False``). With ``since`` (a message id, or a Unix time), the node then
        replays the matching messages of its history that came after it (events with
        ``"replay": true``). Both come before the reply and are kept for
        ``next_event``. Returns the reply (with ``retained``, the number of retained
        events, and ``replayed``, when ``since`` was given). ``ApiReplyError`` with code
        ``rate_limited`` past the node's replay rate (docs/api.md)."""
        return await self.request(subscribe_request(topics, since, retained))

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

    async def unsubscribe(self, topics: list[str] | None = None) -> None:
        """Stop receiving ``topics`` (every topic if empty or None)."""
        await self.request({"op": "unsubscribe", "topics": list(topics or [])})

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
