"""scripts/latency_ab.py: latency through the clients on two pairs of real nodes, this
code against another version of it (here the same one, from a copy)."""

from __future__ import annotations

import sys
from pathlib import Path

from .benchrun import package_copy, run_json

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "latency_ab.py"


def test_latency_ab_against_a_copy_small_json(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH), "--json", "--base", str(package_copy(tmp_path)),
           "--client-base",
           "--kinds", "blocking", "--rounds", "2", "--messages", "100"]
    report = run_json(cmd, "latency_ab.py", timeout=180)
    row = report["blocking"]
    assert len(row["base_runs_p50_ms"]) == len(row["new_runs_p50_ms"]) == 2
    assert 0 < row["new_p50_ms"] <= row["new_p99_ms"]
    assert 0 < row["base_p50_ms"] <= row["base_p99_ms"]
    assert 0 <= row["new_faster_runs"] <= 2
    assert report["params"]["client_base"] is True
