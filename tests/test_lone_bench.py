"""scripts/lone_bench.py: a lone request's round trip on real nodes, beside the echo
floor, and against another version of the code (here the same one, from a copy)."""

from __future__ import annotations

import sys
from pathlib import Path

from .benchrun import package_copy, run_json

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "lone_bench.py"


def test_lone_bench_against_a_copy_small_json(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH), "--json", "--base", str(package_copy(tmp_path)), "--store",
           "sqlite", "--rounds", "2", "--block", "20"]
    report = run_json(cmd, "lone_bench.py", timeout=120)
    assert report["request_rtt_us"] > 0
    assert report["base_request_rtt_us"] > 0
    assert report["echo_rtt_us"] > 0
    assert len(report["blocks_us"]) == len(report["base_blocks_us"]) == 2
    assert 0 <= report["new_faster_blocks"] <= 2
    assert report["cpu_us_per_request"] >= 0
    assert report["params"]["store"] == "sqlite"
