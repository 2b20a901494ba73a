"""The requests that the trio and asyncio clients share: each built on ``request``."""

from __future__ import annotations

from typing import Any

from .protocol import peers_request, subscribe_request


class AsyncRequests:
    """``subscribe``, ``unsubscribe``, ``peers``, ``status``, ``monitor``: one request
    each, whose checked reply they return (``ApiReplyError`` on an error reply)."""

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def subscribe(self, topics: list[str] | None = None,
                        since: str | float | None = None) -> dict[str, Any]:
        """Subscribe to ``topics`` (all topics if empty or None). With ``since`` (a message
        id, or a Unix time), the node first replays the matching messages of its history
        that came after it (events with ``"replay": true``, sent before the reply and
        kept for ``next_event``). Returns the reply (with ``replayed``, the number of
        replayed events, when ``since`` was given). ``ApiReplyError`` with code
        ``rate_limited`` past the node's replay rate (docs/api.md)."""
        return await self.request(subscribe_request(topics, since))

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
