"""Token buckets, driven by the caller's clock (no I/O)."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``rate`` units per second on average, and bursts of up to ``burst``.

    ``take(n, now)`` spends ``n`` units if they are there and says whether it did.
    Time is the caller's (float seconds, never going backwards).
    """

    __slots__ = ("_stamp", "_tokens", "burst", "denied", "rate")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now
        self.denied = 0  # how many takes were refused

    def take(self, n: float, now: float) -> bool:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        self.denied += 1
        return False
