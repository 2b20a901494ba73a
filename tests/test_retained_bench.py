"""scripts/retained_bench.py runs real nodes on loopback and reports the sync and the
subscription to a whole retained set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "retained_bench.py"


@pytest.mark.parametrize("alone", [False, True])
def test_retained_bench_small_json(alone: bool) -> None:
    cmd = [sys.executable, str(BENCH), "--topics", "150", "--repeat", "1", "--json",
           *(["--alone"] if alone else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"retained_bench.py did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    (run,) = report["runs"]
    assert (report["topics"], report["alone"], run["events"], run["dropped"]) == (
        150, alone, 150, 0)
    assert run["sync_s"] >= 0
    assert run["sync_bytes"] > 150 * 100  # at least the payloads came
