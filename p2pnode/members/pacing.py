"""A token bucket per key that holds back the newest value over its rate (pure: the
clock is the caller's). Used for what one member's record changes cost other nodes
(``members.interestgate``, and the flooding of its records in ``members.service``):
only the newest change of a member matters, so what is over the rate waits and is
replaced by any newer one, instead of being dropped."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Pacer(Generic[K, V]):
    """Per key, ``rate`` values a second on average, ``burst`` at once; the newest value
    over that is held until its key's bucket allows (``due``)."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[K, tuple[float, float]] = {}  # key -> (tokens, stamp)
        self.held: dict[K, V] = {}  #: key -> the newest value held back
        self.held_total = 0  #: values held back (a later one may have replaced them)
        self._pruned = float("-inf")  # when the full buckets were last forgotten

    def __len__(self) -> int:
        """Keys whose bucket is not full (the memory the pacer holds, with ``held``)."""
        return len(self._buckets)

    def offer(self, key: K, value: V, now: float) -> bool:
        """True: ``value`` may go now (what was held for ``key`` is dropped); False: it is
        held (replacing what was)."""
        self.held.pop(key, None)
        if self._take(key, now):
            return True
        self.held[key] = value
        self.held_total += 1
        return False

    def drop(self, key: K) -> None:
        """Forget what is held for ``key``."""
        self.held.pop(key, None)

    def due(self, now: float) -> list[tuple[K, V]]:
        """The held values whose key's bucket allows now (no longer held). The buckets
        that are full again are forgotten, looked for at most once per time a bucket
        takes to fill (a node that just learnt thousands of members does not look
        through them all at every call)."""
        out = [(key, value) for key, value in list(self.held.items()) if self._take(key, now)]
        for key, _ in out:
            del self.held[key]
        if now - self._pruned >= self.burst / self.rate:
            self._pruned = now
            for key in [k for k, (tokens, stamp) in self._buckets.items() if k not in self.held
                        and tokens + (now - stamp) * self.rate >= self.burst]:
                del self._buckets[key]
        return out

    def next_deadline(self) -> float | None:
        """When the first held value may go (None: nothing held)."""
        times = []
        for key in self.held:
            tokens, stamp = self._buckets[key]
            times.append(stamp + max(0.0, 1 - tokens) / self.rate)
        return min(times, default=None)

    def _take(self, key: K, now: float) -> bool:
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True
