"""Who subscribes to what, for delivery: the sessions of all topics, those of each
exact topic name (a dict: the fast path), and those of each pattern (``PatternIndex``,
a trie of levels)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from ..wire.messages import Item
from ..wire.topics import PatternIndex, is_pattern


class Subscriber(Protocol):
    """What the index needs of a session: whether it subscribed to every topic."""

    all_topics: bool


S = TypeVar("S", bound=Subscriber)


class Subscribers(Generic[S]):
    """The three indexes; ``ApiServer.deliver`` reads them directly (the hot path)."""

    def __init__(self) -> None:
        self.all: set[S] = set()
        self.by_topic: dict[str, set[S]] = {}  # exact topic names
        self.patterns: PatternIndex[S] = PatternIndex()  # those with wildcards
        self._pattern_sessions: dict[str, int] = {}  # pattern -> sessions subscribed

    def targets(self, topic: str) -> list[S]:
        """The sessions that get a message of ``topic``, each once: those of all topics,
        then those of its name, then those of a pattern that matches it."""
        subs = self.by_topic.get(topic)
        matched = self.patterns.match(topic) if self.patterns.pairs else None
        out = list(self.all)
        if subs:
            out += [session for session in subs if not session.all_topics]
        if matched:
            out += [session for session in matched
                    if not session.all_topics and not (subs and session in subs)]
        return out

    def wants(self, topic: str) -> bool:
        """Whether any session gets a message of ``topic`` (``targets`` is not empty)."""
        return bool(self.all) or topic in self.by_topic or bool(
            self.patterns.pairs and self.patterns.match(topic))

    def subscriptions(self) -> Iterable[str] | None:
        """Every topic name and pattern some session subscribes to, each once (None: a
        session subscribes to every topic)."""
        if self.all:
            return None
        return itertools.chain(self.by_topic, self._pattern_sessions)

    def add(self, session: S, topic: str) -> None:
        """``session`` subscribes to ``topic``, a name or a pattern."""
        if is_pattern(topic):
            pairs = self.patterns.pairs
            self.patterns.add(topic, session)
            if self.patterns.pairs != pairs:
                self._pattern_sessions[topic] = self._pattern_sessions.get(topic, 0) + 1
        else:
            self.by_topic.setdefault(topic, set()).add(session)

    def discard(self, session: S, topic: str) -> None:
        """``session`` no longer subscribes to ``topic`` (the same string as added)."""
        if is_pattern(topic):
            pairs = self.patterns.pairs
            self.patterns.discard(topic, session)
            if self.patterns.pairs != pairs:
                left = self._pattern_sessions.pop(topic) - 1
                if left:
                    self._pattern_sessions[topic] = left
            return
        subs = self.by_topic.get(topic)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.by_topic[topic]


def topic_runs(items: list[Item]) -> Iterator[tuple[str, list[Item]]]:
    """``items`` in runs of one topic, in order: (the topic, the run)."""
    start = 0
    while start < len(items):
        topic = items[start].topic
        end = start + 1
        while end < len(items) and items[end].topic == topic:
            end += 1
        yield topic, items[start:end]
        start = end
