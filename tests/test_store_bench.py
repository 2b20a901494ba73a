"""scripts/store_bench.py fills a store with real signed batches and times real nodes
starting with it, beside an empty one."""

from __future__ import annotations

import sys
from pathlib import Path

from .benchrun import run_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "store_bench.py"


def test_store_bench_start_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--json", "start", "--size", "3000000",
           "--payload", "500", "--per-batch", "50", "--repeat", "1"]
    report = run_json(cmd, "store_bench.py", timeout=90)
    assert report["store_file_bytes"] >= 3_000_000
    assert report["messages"] == 50 * report["batches"] > 0
    assert len(report["start_s_large_store"]) == len(report["start_s_empty_store"]) == 1
    assert 0 < report["median_large"] < 30


def test_store_bench_replay_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--json", "replay", "--messages", "3000"]
    report = run_json(cmd, "store_bench.py", timeout=90)
    assert report["received"] == report["messages"] >= 3000
    assert report["msgs_per_s"] > 0
    assert report["node_peak_rss_mib"] > 10  # the node's own RSS was sampled
