"""Topic levels and wildcard patterns (p2pnode/wire/topics.py), without I/O: the
matching table (MQTT's rules), the trie against a brute-force match, unsubscribing,
many patterns, and the errors for bad topics and patterns."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.api import (
    MAX_PATTERN_LEVELS,
    ApiError,
    PatternIndex,
    TopicFilter,
    check_pattern,
    check_topic,
    check_topics,
    is_pattern,
    pattern_problem,
    topic_matches,
)
from p2pnode.wire.topics import MATCH_CACHE

# (pattern, topic, matches)
TABLE = [
    # exact names
    ("a/b", "a/b", True),
    ("a/b", "a/b/c", False),
    ("a/b", "a", False),
    # '+': exactly one level, never across levels
    ("sensors/+/temperature", "sensors/kitchen/temperature", True),
    ("sensors/+/temperature", "sensors/temperature", False),
    ("sensors/+/temperature", "sensors/a/b/temperature", False),
    ("sensors/+/temperature", "sensors/kitchen/humidity", False),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+/+", "a/b", True),
    ("+/+", "a", False),
    ("a/+", "a", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("+/b", "a/b", True),
    # '#': the rest, including none (so the parent level itself)
    ("a/#", "a", True),
    ("a/#", "a/b", True),
    ("a/#", "a/b/c/d", True),
    ("a/#", "ab", False),
    ("a/#", "b/a", False),
    ("#", "a", True),
    ("#", "a/b/c", True),
    ("+/#", "a", True),
    ("+/#", "a/b/c", True),
    ("a/+/#", "a", False),
    ("a/+/#", "a/b", True),
    ("a/+/#", "a/b/c", True),
    # empty levels are levels
    ("a/+/b", "a//b", True),
    ("a//b", "a//b", True),
    ("a/b", "a//b", False),
    ("a/+", "a/", True),
    ("a/#", "a/", True),
    ("+/+", "/", True),
    ("+", "/", False),
    ("#", "/", True),
    ("/+", "/a", True),
    ("+/a", "/a", True),
    # topics starting with '$': no wildcard at the first level matches them
    ("#", "$mesh", False),
    ("#", "$sys/x", False),
    ("+", "$mesh", False),
    ("+/x", "$sys/x", False),
    ("+/#", "$sys/x", False),
    ("$sys/#", "$sys/x", True),
    ("$sys/+", "$sys/x", True),
    ("$sys/#", "$sys", True),
    ("a/#", "a/$b", True),  # '$' further down is an ordinary character
    ("+/+", "a/$b", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), TABLE)
def test_matching_table(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_problem(pattern) is None
    assert topic_matches(pattern, topic) is expected
    index: PatternIndex[str] = PatternIndex()
    index.add(pattern, "s")
    assert index.match(topic) == ({"s"} if expected else set())
    assert (topic in TopicFilter([pattern])) is expected


def test_all_patterns_of_the_table_in_one_index() -> None:
    index: PatternIndex[str] = PatternIndex()
    for pattern, _, _ in TABLE:
        index.add(pattern, pattern)
    for topic in {t for _, t, _ in TABLE}:
        expected = {p for p, _, _ in TABLE if topic_matches(p, topic)}
        assert index.match(topic) == expected, topic


def test_a_subscriber_matched_by_several_patterns_is_found_once() -> None:
    index: PatternIndex[str] = PatternIndex()
    for pattern in ("#", "a/#", "a/+", "+/b", "a/b/#"):
        index.add(pattern, "s")
    index.add("a/+", "t")
    assert index.match("a/b") == {"s", "t"}
    assert len(index) == 6


LEVEL = st.sampled_from(["a", "b", "", "$x"])
TOPIC = st.lists(LEVEL, min_size=1, max_size=4).map("/".join)
PATTERN = st.tuples(
    st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=0, max_size=4),
    st.booleans(),
).map(lambda t: "/".join([*t[0], "#"] if t[1] else t[0])).filter(bool)


@given(st.lists(PATTERN, max_size=12), st.lists(TOPIC, min_size=1, max_size=8))
def test_the_trie_agrees_with_the_reference(patterns: list[str], topics: list[str]) -> None:
    index: PatternIndex[int] = PatternIndex()
    for k, pattern in enumerate(patterns):
        index.add(pattern, k)
    for topic in topics:
        assert index.match(topic) == {k for k, p in enumerate(patterns)
                                      if topic_matches(p, topic)}, topic


@given(st.lists(st.tuples(PATTERN, st.integers(0, 3)), max_size=16), st.data())
def test_discard_undoes_add_and_prunes(pairs: list[tuple[str, int]],
                                       data: st.DataObject) -> None:
    index: PatternIndex[int] = PatternIndex()
    for pattern, sub in pairs:
        index.add(pattern, sub)
    assert len(index) == len(set(pairs))
    keep = data.draw(st.sets(st.sampled_from(pairs)) if pairs else st.just(set()))
    for pair in set(pairs) - keep:
        index.discard(*pair)
    index.discard("never/+/added", 0)  # no harm
    assert len(index) == len(keep)
    for topic in ("a", "a/b", "/", "a//b", "$x/a", "b/a/b/a"):
        assert index.match(topic) == {s for p, s in keep if topic_matches(p, topic)}
    for pair in keep:
        index.discard(*pair)
    assert len(index) == 0
    assert index._root.empty()  # every level was pruned
    assert index._named == []


def test_remembered_matches_follow_subscription_changes() -> None:
    index: PatternIndex[str] = PatternIndex()
    assert index.match("a/b") == set()
    index.add("a/+", "s")
    assert index.match("a/b") == {"s"}
    index.add("#", "t")
    assert index.match("a/b") == {"s", "t"}
    index.discard("a/+", "s")
    assert index.match("a/b") == {"t"}
    index.discard("#", "t")
    assert index.match("a/b") == set()


def test_remembered_matches_are_bounded() -> None:
    index: PatternIndex[str] = PatternIndex()
    index.add("t/+", "s")
    for k in range(3 * MATCH_CACHE):
        assert index.match(f"t/{k}") == {"s"}
        assert len(index._cache) <= MATCH_CACHE
    assert index.match("t") == set()
    assert index.match("t/a") is index.match("t/b")  # one copy of each result
    assert len(index._results) == 2


def test_topics_of_one_shape_share_a_walk() -> None:
    index: PatternIndex[str] = PatternIndex()
    index.add("sensors/+/temperature", "dash")
    index.add("sensors/attic/#", "attic")
    index.add("$sys/+", "sys")
    # Levels no pattern names at their depth stand for one another.
    assert index._shape("sensors/kitchen/temperature") == "sensors/\x00/temperature"
    assert index._shape("sensors/attic/temperature") == "sensors/attic/temperature"
    assert index._shape("other/x/y/z") == "\x00/\x00/\x00/\x00"
    assert index._shape("$other/x") == "$\x00/\x00"  # still a '$' topic
    assert index._shape("$sys/x") == "$sys/\x00"
    for k in range(3 * MATCH_CACHE):
        assert index.match(f"sensors/n{k}/temperature") == {"dash"}
    assert index.match("sensors/attic/temperature") == {"dash", "attic"}
    assert index.match("sensors/attic") == {"attic"}
    assert index.match("sensors/n1/humidity") == set()
    assert index.match("$sys/x") == {"sys"}
    assert index.match("$other/x") == set()
    assert index.match("$sys") == set()
    index.add("sensors/n7/+", "n7")  # names n7 at depth 1: n7 gets its own shape
    assert index.match("sensors/n7/temperature") == {"dash", "n7"}
    assert index.match("sensors/n8/temperature") == {"dash"}
    index.discard("sensors/n7/+", "n7")
    assert index.match("sensors/n7/temperature") == {"dash"}
    assert index._shape("sensors/n7/temperature") == "sensors/\x00/temperature"


def test_many_patterns() -> None:
    rng = random.Random(16)
    index: PatternIndex[int] = PatternIndex()
    patterns = []
    for k in range(5000):
        room = rng.choice(["kitchen", "hall", f"room{k}", "+"])
        kind = rng.choice(["temperature", "humidity", "+", "#", f"k{k}"])
        pattern = f"sensors/{room}/{kind}" if kind != "#" else f"sensors/{room}/#"
        patterns.append(pattern)
        index.add(pattern, k)
    for topic in ("sensors/kitchen/temperature", "sensors/hall/humidity",
                  "sensors/room7/k7", "sensors/attic/temperature", "sensors", "other/x/y"):
        assert index.match(topic) == {k for k, p in enumerate(patterns)
                                      if topic_matches(p, topic)}
    assert index.match("other/x/y") == set()


@pytest.mark.parametrize("pattern", [
    "a/+", "+", "#", "a/#", "+/+/#", "a//+", "sensors/+/temperature",
    "/".join(["+"] * MAX_PATTERN_LEVELS),
])
def test_valid_patterns(pattern: str) -> None:
    assert is_pattern(pattern)
    assert pattern_problem(pattern) is None
    assert check_pattern(pattern) == pattern
    assert check_topics([pattern, "plain"]) == [pattern, "plain"]


@pytest.mark.parametrize(("pattern", "says"), [
    ("a/b#", "'#' must be alone in its level"),
    ("#/a", "'#' must be the last level"),
    ("a/#/b", "'#' must be the last level"),
    ("a/##", "'#' must be alone"),
    ("a+/b", "'+' must be alone in its level"),
    ("a/+b", "'+' must be alone"),
    ("++", "'+' must be alone"),
    ("/".join(["+"] * (MAX_PATTERN_LEVELS + 1)), f"at most {MAX_PATTERN_LEVELS} levels"),
])
def test_bad_patterns_are_refused_with_the_reason(pattern: str, says: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None
    assert says in problem
    with pytest.raises(ApiError) as info:
        check_topics(["fine", pattern], 4)
    assert (info.value.code, info.value.req_id) == ("bad_request", 4)
    assert says in info.value.message
    assert repr(pattern) in info.value.message


@pytest.mark.parametrize(("topic", "char"), [
    ("a/+", "+"), ("a/#", "#"), ("+", "+"), ("#", "#"), ("a+b", "+"), ("c#", "#")])
def test_wildcards_are_refused_in_a_published_topic(topic: str, char: str) -> None:
    with pytest.raises(ApiError) as info:
        check_topic(topic, "p")
    assert (info.value.code, info.value.req_id) == ("bad_request", "p")
    assert f"may not contain {char!r}" in info.value.message


@pytest.mark.parametrize("topic", ["a/b", "a//b", "/", "a/", "sensors/kitchen/temp"])
def test_levels_are_fine_in_a_published_topic(topic: str) -> None:
    assert check_topic(topic) == topic
    assert not is_pattern(topic)


def test_reserved_topics_stay_refused_as_patterns() -> None:
    with pytest.raises(ApiError, match="reserved"):
        check_pattern("$mesh/#")


def test_topic_filter_names_and_patterns() -> None:
    wanted = TopicFilter(["chat", "sensors/+/temperature"])
    assert len(wanted) == 2
    assert "chat" in wanted
    assert "sensors/k/temperature" in wanted
    assert "sensors/k/humidity" not in wanted
    assert "chat/x" not in wanted
    assert not TopicFilter([])
    assert "x" not in TopicFilter([])
