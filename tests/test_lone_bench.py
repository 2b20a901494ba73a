"""scripts/lone_bench.py: a lone request's round trip on real nodes, beside the echo
floor, and against another version of the code (here the same one, from a copy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "lone_bench.py"


def test_lone_bench_against_a_copy_small_json(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "p2pnode", tmp_path / "p2pnode",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, str(BENCH), "--json", "--base", str(tmp_path), "--store",
           "sqlite", "--rounds", "2", "--block", "20"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"lone_bench.py did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["request_rtt_us"] > 0
    assert report["base_request_rtt_us"] > 0
    assert report["echo_rtt_us"] > 0
    assert len(report["blocks_us"]) == len(report["base_blocks_us"]) == 2
    assert 0 <= report["new_faster_blocks"] <= 2
    assert report["cpu_us_per_request"] >= 0
    assert report["params"]["store"] == "sqlite"
