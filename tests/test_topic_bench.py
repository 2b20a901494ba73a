"""scripts/topic_bench.py runs real nodes on loopback and reports exact topics beside
wildcard patterns, every message received once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .benchrun import run_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "topic_bench.py"


def test_topic_bench_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--messages", "3000", "--rounds", "2",
           "--patterns", "200", "--spread", "1", "--spread", "5000", "--timeout", "20",
           "--json"]
    report = run_json(cmd, "topic_bench.py", timeout=120)
    assert report["ok"] is True
    assert report["problems"] == []
    for key in ("spread1", "spread5000"):
        row = report[key]
        assert len(row["exact_runs"]) == len(row["patterns_runs"]) == 2
        assert row["exact_msgs_per_s"] > 0
        assert row["patterns_msgs_per_s"] > 0
        assert row["ratio"] == pytest.approx(
            row["patterns_msgs_per_s"] / row["exact_msgs_per_s"], rel=1e-2)
    assert set(report["match"]) == {
        "exact_dict_us", "one_pattern_remembered_us", "patterns_remembered_us",
        "one_pattern_new_topic_us", "patterns_new_topic_us", "patterns_walk_us"}
    assert all(v > 0 for v in report["match"].values())


def test_the_decoys_match_none_of_the_published_topics() -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        import topic_bench
    finally:
        sys.path.remove(str(BENCH.parent))
    from p2pnode.api import PatternIndex, pattern_problem

    index: PatternIndex[str] = PatternIndex()
    subs = topic_bench.subscriptions("patterns", 2000, 1000)
    assert len(set(subs)) == 1000
    for pattern in subs:
        assert pattern_problem(pattern) is None
        index.add(pattern, pattern)
    for k in (0, 1, 999, 1999):
        assert index.match(topic_bench.topic(k)) == {"sensors/+/temperature"}
