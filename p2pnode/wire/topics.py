"""Hierarchical topics and subscription patterns (MQTT's rules), without I/O.

A topic is split at ``/`` into levels: ``sensors/kitchen/temperature`` has three,
``a//b`` three too (the middle one empty), ``a/`` two. A subscription is a topic
name or a *pattern*, which may use two wildcards, each alone in its level:

- ``+`` matches exactly one level, whatever it holds (an empty level too):
  ``sensors/+/temperature`` matches ``sensors/kitchen/temperature`` but neither
  ``sensors/temperature`` nor ``sensors/a/b/temperature``;
- ``#``, only as the last level, matches every remaining level, including none:
  ``sensors/#`` matches ``sensors``, ``sensors/kitchen`` and
  ``sensors/kitchen/temperature``; ``#`` alone matches every topic.

A pattern whose first level is a wildcard never matches a topic that starts with
``$`` (as in MQTT, where such topics belong to the broker; here, to the nodes).
Published topics may not hold ``+`` or ``#``.

``PatternIndex`` maps a concrete topic to the subscribers whose patterns match it,
with a trie of levels: the cost of a match depends on the topic's levels and on
the patterns that share its prefixes, not on how many patterns there are.
``TopicFilter`` is a set of subscriptions to test topics against (a replay).

The rules are the API's (``api.protocol`` raises them as ``ApiError``) and the member
records' (``members.records``: the patterns a member subscribes to), so they live here,
in the pure wire layer that both import.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Generic, TypeVar

from ..config.settings import MAX_TOPIC_BYTES
from ..mesh.linklist import RESERVED_PREFIX

__all__ = ["MATCH_CACHE", "MAX_PATTERN_LEVELS", "MULTI", "SEPARATOR", "SINGLE", "PatternIndex",
           "TopicFilter", "is_pattern", "name_problem", "pattern_problem",
           "published_topic_problem", "subscription_problem", "topic_matches"]

SEPARATOR = "/"
SINGLE = "+"  # one level
MULTI = "#"  # the rest, including none
#: The most levels a pattern with wildcards may have (a topic name without wildcards
#: is bounded by its length alone).
MAX_PATTERN_LEVELS = 32
#: The topics whose match ``PatternIndex`` remembers until its patterns change: a
#: topic seen before costs one dict lookup; past this many, it starts over. (About
#: 1.6 MB when full: the topics, and one copy of each distinct result.)
MATCH_CACHE = 16384
#: Stands for a level that no pattern names at its depth (not printable: never a
#: level of a valid topic), and for such a first level that starts with '$'.
_OTHER = "\x00"
_OTHER_DOLLAR = "$\x00"

T = TypeVar("T")


def is_pattern(subscription: str) -> bool:
    """Whether ``subscription`` holds a wildcard (otherwise it names one topic)."""
    return SINGLE in subscription or MULTI in subscription


def published_topic_problem(topic: str) -> str | None:
    """Why ``topic`` may not be published to (it holds a wildcard), or None."""
    for char in (SINGLE, MULTI):
        if char in topic:
            return (f"a published topic may not contain {char!r}: '+' and '#' are "
                    "wildcards, for subscriptions only")
    return None


def name_problem(topic: str) -> str | None:
    """What topics and subscriptions share: why ``topic`` is not 1-256 UTF-8 bytes of
    printable characters outside the reserved ``$`` topics, or None."""
    size = len(topic.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_TOPIC_BYTES:
        return f"a topic is 1-{MAX_TOPIC_BYTES} bytes"
    if not topic.isprintable():
        return "a topic may not contain control characters"
    if topic.startswith(RESERVED_PREFIX):
        return (f"topics starting with {RESERVED_PREFIX!r} are reserved for the nodes "
                "themselves")
    return None


def subscription_problem(subscription: str) -> str | None:
    """Why ``subscription`` is not something an app may subscribe to (``name_problem``,
    then ``pattern_problem``), or None."""
    problem = name_problem(subscription)
    if problem is not None:
        return problem
    problem = pattern_problem(subscription)
    return None if problem is None else f"pattern {subscription!r}: {problem}"


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subscription, or None: each wildcard alone in
    its level, ``#`` only as the last level, at most ``MAX_PATTERN_LEVELS`` levels."""
    if not is_pattern(pattern):
        return None
    levels = pattern.split(SEPARATOR)
    if len(levels) > MAX_PATTERN_LEVELS:
        return f"a pattern with wildcards has at most {MAX_PATTERN_LEVELS} levels"
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if MULTI in level:
            if level != MULTI:
                return f"'#' must be alone in its level (between '/'), not in {level!r}"
            if i != last:
                return "'#' must be the last level of a pattern (as in 'a/#')"
        elif SINGLE in level and level != SINGLE:
            return f"'+' must be alone in its level (between '/'), not in {level!r}"
    return None


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether the subscription ``pattern`` (valid: ``pattern_problem`` is None)
    matches the concrete ``topic``. One at a time; ``PatternIndex`` for many."""
    if not is_pattern(pattern):
        return pattern == topic
    if topic.startswith("$") and pattern[0] in (SINGLE, MULTI):
        return False
    want = pattern.split(SEPARATOR)
    have = topic.split(SEPARATOR)
    for i, level in enumerate(want):
        if level == MULTI:
            return True  # the rest, including none
        if i >= len(have) or (level != SINGLE and level != have[i]):
            return False
    return len(want) == len(have)


class _Node(Generic[T]):
    """A level of the trie: what follows it, and who subscribed to a pattern that
    ends here (``here``) or goes on with ``#`` (``rest``)."""

    __slots__ = ("children", "here", "plus", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.plus: _Node[T] | None = None  # the child for a '+' level
        self.here: set[T] = set()
        self.rest: set[T] = set()

    def empty(self) -> bool:
        return not (self.children or self.plus or self.here or self.rest)


class PatternIndex(Generic[T]):
    """Subscribers by pattern, in a trie of levels; ``match`` a concrete topic.

    Patterns must be valid (``pattern_problem``), topics printable. Each (pattern,
    subscriber) pair is held once; memory is a node per distinct level of distinct
    pattern prefixes.

    The match of up to ``MATCH_CACHE`` topics is remembered until a pattern is added
    or removed. A topic not remembered is first reduced to its *shape*: each level
    that no pattern names at that depth (the ``kitchen`` of
    ``sensors/kitchen/temperature`` when the patterns say ``sensors/+/temperature``)
    is replaced by one stand-in, which cannot change the match. Thousands of sensors
    then share a shape, whose match is remembered too: the trie is walked once per
    shape, not once per topic.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        #: The number of (pattern, subscriber) pairs (read it, do not set it): an
        #: attribute, so that a caller on the hot path can test it without a call.
        self.pairs = 0
        self._cache: dict[str, frozenset[T]] = {}  # topic or shape -> its match
        self._results: dict[frozenset[T], frozenset[T]] = {}  # one copy of each
        self._named: list[dict[str, int]] = []  # per depth: level -> patterns naming it

    def __len__(self) -> int:
        """The number of (pattern, subscriber) pairs."""
        return self.pairs

    def add(self, pattern: str, subscriber: T) -> None:
        """Subscribe ``subscriber`` to ``pattern`` (again: no change)."""
        node = self._root
        *levels, last = pattern.split(SEPARATOR)
        for level in levels:
            node = self._child(node, level)
        if last == MULTI:
            target = node.rest
        else:
            target = self._child(node, last).here
        if subscriber not in target:
            target.add(subscriber)
            self.pairs += 1
            self._count_names(pattern, 1)

    @staticmethod
    def _child(node: _Node[T], level: str) -> _Node[T]:
        if level == SINGLE:
            if node.plus is None:
                node.plus = _Node()
            return node.plus
        child = node.children.get(level)
        if child is None:
            child = node.children[level] = _Node()
        return child

    def discard(self, pattern: str, subscriber: T) -> None:
        """Unsubscribe ``subscriber`` from ``pattern`` (not subscribed: no change);
        the levels no pattern uses any more are removed."""
        path: list[tuple[_Node[T], str]] = []  # (parent, level) down to the last node
        node = self._root
        *levels, last = pattern.split(SEPARATOR)
        for level in (*levels, last) if last != MULTI else levels:
            child = node.plus if level == SINGLE else node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        target = node.rest if last == MULTI else node.here
        if subscriber not in target:
            return
        target.discard(subscriber)
        self.pairs -= 1
        self._count_names(pattern, -1)
        for parent, level in reversed(path):
            if not node.empty():
                break
            if level == SINGLE:
                parent.plus = None
            else:
                del parent.children[level]
            node = parent

    def _count_names(self, pattern: str, step: int) -> None:
        """Count the levels ``pattern`` names at each depth up (1) or down (-1), and
        forget the remembered matches."""
        named = self._named
        for depth, level in enumerate(pattern.split(SEPARATOR)):
            if level in (SINGLE, MULTI):
                continue
            while len(named) <= depth:
                named.append({})
            count = named[depth].get(level, 0) + step
            if count:
                named[depth][level] = count
            else:
                del named[depth][level]
        while named and not named[-1]:
            named.pop()
        self._forget()

    def match(self, topic: str) -> Set[T]:
        """The subscribers of every pattern that matches ``topic`` (each once)."""
        found = self._cache.get(topic)
        if found is None:
            if len(self._cache) >= MATCH_CACHE - 1:  # room for the topic and its shape
                self._forget()
            shape = self._shape(topic)
            found = self._cache.get(shape) if shape is not topic else None
            if found is None:
                walked = frozenset(self._walk(shape))
                found = self._cache[shape] = self._results.setdefault(walked, walked)
            self._cache[topic] = found
        return found

    def _shape(self, topic: str) -> str:
        """``topic`` with each level that no pattern names at its depth replaced by a
        stand-in (``topic`` itself if every level is named)."""
        levels = topic.split(SEPARATOR)
        named = self._named
        depths = len(named)
        other = False
        for depth, level in enumerate(levels):
            if depth >= depths or level not in named[depth]:
                levels[depth] = _OTHER_DOLLAR if depth == 0 and level[:1] == "$" else _OTHER
                other = True
        return SEPARATOR.join(levels) if other else topic

    def _forget(self) -> None:
        """Forget the remembered matches (the patterns changed, or too many topics)."""
        self._cache.clear()
        self._results.clear()

    def _walk(self, topic: str) -> set[T]:
        """``match`` without the cache: down the trie, a level at a time."""
        found: set[T] = set()
        levels = topic.split(SEPARATOR)
        nodes = [self._root]
        if topic[:1] == "$":  # no wildcard at the first level: only a literal one
            first = self._root.children.get(levels[0])
            if first is None:
                return found
            nodes, levels = [first], levels[1:]
        for level in levels:
            following: list[_Node[T]] = []
            for node in nodes:
                if node.rest:
                    found |= node.rest  # 'prefix/#': one level or more follows
                child = node.children.get(level)
                if child is not None:
                    following.append(child)
                if node.plus is not None:
                    following.append(node.plus)
            if not following:
                return found
            nodes = following
        for node in nodes:
            found |= node.here
            found |= node.rest  # 'prefix/#' matches 'prefix' itself
        return found


class TopicFilter:
    """A set of subscriptions (topic names and patterns, valid): ``topic in f`` says
    whether any matches. Empty: matches nothing (the caller decides what an empty
    subscription list means)."""

    def __init__(self, subscriptions: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._patterns: PatternIndex[bool] = PatternIndex()
        for sub in subscriptions:
            if is_pattern(sub):
                self._patterns.add(sub, True)
            else:
                self._exact.add(sub)

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def __contains__(self, topic: object) -> bool:
        if topic in self._exact:
            return True
        return self._patterns.pairs > 0 and isinstance(topic, str) and bool(
            self._patterns.match(topic))
