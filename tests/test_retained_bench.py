"""scripts/retained_bench.py runs real nodes on loopback and reports the sync and the
subscription to a whole retained set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .benchrun import run_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "retained_bench.py"


@pytest.mark.parametrize("alone", [False, True])
def test_retained_bench_small_json(alone: bool) -> None:
    cmd = [sys.executable, str(BENCH), "--topics", "150", "--repeat", "1", "--json",
           *(["--alone"] if alone else [])]
    report = run_json(cmd, "retained_bench.py", timeout=60)
    (run,) = report["runs"]
    assert (report["topics"], report["alone"], run["events"], run["dropped"]) == (
        150, alone, 150, 0)
    assert run["sync_s"] >= 0
    assert run["sync_bytes"] > 150 * 100  # at least the payloads came
