"""scripts/store_bench.py fills a store with real signed batches and times real nodes
starting with it, beside an empty one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "store_bench.py"


def test_store_bench_start_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--json", "start", "--size", "3000000",
           "--payload", "500", "--per-batch", "50", "--repeat", "1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"store_bench.py did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["store_file_bytes"] >= 3_000_000
    assert report["messages"] == 50 * report["batches"] > 0
    assert len(report["start_s_large_store"]) == len(report["start_s_empty_store"]) == 1
    assert 0 < report["median_large"] < 30


def test_store_bench_replay_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--json", "replay", "--messages", "3000"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"store_bench.py did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["received"] == report["messages"] >= 3000
    assert report["msgs_per_s"] > 0
    assert report["node_peak_rss_mib"] > 10  # the node's own RSS was sampled
