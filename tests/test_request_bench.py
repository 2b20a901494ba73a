"""scripts/request_bench.py runs real nodes on loopback and reports request/reply round
trips per client, one and two hops."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "request_bench.py"


def test_request_bench_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--requests", "30", "--warmup", "3", "--repeat", "1",
           "--kinds", "trio,asyncio,blocking",
           "--timeout", "30", "--json"]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        inner = " ".join(f"'{c}'" for c in cmd)  # a private network namespace
        cmd = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"request_bench.py did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout)
    for kind in ("trio", "asyncio", "blocking"):
        for what in ("1 hop", "2 hops", "sync"):
            row = report[kind][what]
            assert 0 < row["p50_ms"] <= row["p99_ms"], (kind, what)
            assert len(row["runs_p50_ms"]) == 1
        # a request crosses the mesh and back: more than one API round trip
        assert report[kind]["1 hop"]["p50_ms"] > report[kind]["sync"]["p50_ms"]
    assert report["params"]["requests"] == 30
