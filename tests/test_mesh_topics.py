"""scripts/mesh_topics.py runs two 10-node meshes on loopback (tree and interest
routing) and reports mesh10_topics beside mesh10, every message received once by its
topic's subscriber."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from .benchrun import package_copy, run_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "mesh_topics.py"


def load() -> Any:
    sys.path.insert(0, str(BENCH.parent))
    try:
        import mesh_topics
    finally:
        sys.path.remove(str(BENCH.parent))
    return mesh_topics


@pytest.mark.parametrize("publishers", [1, 3, 10])
def test_each_publisher_sends_every_topic_in_turn(publishers: int) -> None:
    mt = load()
    n = 10 * publishers * 7
    by_topic: dict[int, set[int]] = {}
    by_publisher: dict[int, list[int]] = {}
    for seq in range(n):
        by_topic.setdefault(mt.topic_of(seq, publishers), set()).add(seq)
        by_publisher.setdefault(seq % publishers, []).append(seq)
    assert sorted(by_topic) == list(range(10))
    assert all(len(seqs) == n // 10 for seqs in by_topic.values())
    for seqs in by_publisher.values():  # publisher p's k-th message goes to t{k mod 10}
        assert [mt.topic_of(s, publishers) for s in seqs[:20]] == list(range(10)) * 2
    line = mt.publish_line(n - 1, 3, publishers)
    assert line.startswith(b'{"op":"publish","topic":"t%d","data":"%010d %019d '
                           % (mt.topic_of(n - 1, publishers), n - 1, 3))
    assert line.endswith(b'"}\n')


def test_mesh_topics_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--messages", "3000", "--mesh-messages", "1000",
           "--rounds", "1", "--publishers", "3", "--timeout", "30", "--json"]
    report = run_json(cmd, "mesh_topics.py", timeout=180)
    assert report["ok"] is True
    assert report["problems"] == []
    for mode in ("tree", "interest", "mesh10"):
        assert len(report["runs"][mode]) == 1
        assert report["runs"][mode][0] > 0
        assert report["cpu_us_per_msg"][mode] > 0
    assert report["ratio"] == pytest.approx(
        report["mesh10_topics_interest_msgs_per_s"] / report["mesh10_topics_tree_msgs_per_s"],
        rel=1e-2)
    interest = report["counters"]["interest"]
    assert interest["interest.routed"] > 0  # the interest mesh routed by its trees
    assert interest["api.events_dropped"] == 0
    assert report["counters"]["tree"]["interest.routed"] == 0


def test_mesh_topics_ab_against_the_same_code(tmp_path: Path) -> None:
    script = BENCH.with_name("mesh_topics_ab.py")
    cmd = [sys.executable, str(script), "--base", str(package_copy(tmp_path)),
           "--messages", "2000",
           "--mesh-messages", "1000", "--rounds", "1", "--timeout", "30", "--json"]
    report = run_json(cmd, "mesh_topics_ab.py", timeout=240)
    assert report["ok"] is True
    assert report["problems"] == []
    rates = report["msgs_per_s"]
    assert sorted(rates) == ["interest_base", "interest_new", "mesh10_base", "mesh10_new"]
    assert all(rate > 0 for rate in rates.values())
    assert report["new_interest_to_base_mesh10"] == pytest.approx(
        rates["interest_new"] / rates["mesh10_base"], rel=1e-2)
