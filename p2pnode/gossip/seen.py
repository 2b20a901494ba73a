"""A cache of recently seen message ids, bounded in entries and in time."""

from __future__ import annotations

from ..errors import LocalError


class SeenCache:
    """Remembers message ids for ``ttl`` seconds, at most ``max_entries`` of them.

    Time is the caller's (a float, e.g. ``trio.current_time()``) and must not go
    backwards. When full, the oldest entry is forgotten first.
    """

    def __init__(self, max_entries: int, ttl: float) -> None:
        if max_entries < 1 or ttl <= 0:
            raise LocalError("SeenCache needs max_entries >= 1 and ttl > 0")
        self._max = max_entries
        self._ttl = ttl
        self._expiry: dict[bytes, float] = {}
        self.evicted = 0  # entries forgotten because the cache was full

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: bytes) -> bool:
        return key in self._expiry

    def seen(self, key: bytes, now: float) -> bool:
        """Whether ``key`` was recorded within the ttl."""
        self.expire(now)
        return key in self._expiry

    def add(self, key: bytes, now: float) -> bool:
        """Record ``key``; return True if it was not already known (a new id)."""
        expiry = self._expiry
        self.expire(now)
        if key in expiry:
            return False
        if len(expiry) >= self._max:
            del expiry[next(iter(expiry))]
            self.evicted += 1
        expiry[key] = now + self._ttl
        return True

    def expire(self, now: float) -> int:
        """Forget entries older than the ttl; return how many were forgotten."""
        expiry = self._expiry
        removed = 0
        while expiry:
            oldest = next(iter(expiry))
            if expiry[oldest] > now:
                break
            del expiry[oldest]
            removed += 1
        return removed
