"""Who subscribes to what, for delivery: the sessions of all topics, those of each
exact topic name (a dict: the fast path), and those of each pattern (``PatternIndex``,
a trie of levels)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .topics import PatternIndex, is_pattern

S = TypeVar("S")


class Subscribers(Generic[S]):
    """The three indexes; ``ApiServer.deliver`` reads them directly (the hot path)."""

    def __init__(self) -> None:
        self.all: set[S] = set()
        self.by_topic: dict[str, set[S]] = {}  # exact topic names
        self.patterns: PatternIndex[S] = PatternIndex()  # those with wildcards

    def add(self, session: S, topic: str) -> None:
        """``session`` subscribes to ``topic``, a name or a pattern."""
        if is_pattern(topic):
            self.patterns.add(topic, session)
        else:
            self.by_topic.setdefault(topic, set()).add(session)

    def discard(self, session: S, topic: str) -> None:
        """``session`` no longer subscribes to ``topic`` (the same string as added)."""
        if is_pattern(topic):
            self.patterns.discard(topic, session)
            return
        subs = self.by_topic.get(topic)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.by_topic[topic]
