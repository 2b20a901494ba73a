"""scripts/request_bench.py runs real nodes on loopback and reports request/reply round
trips per client, one and two hops."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .benchrun import run_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "request_bench.py"


def test_request_bench_small_json() -> None:
    cmd = [sys.executable, str(BENCH), "--requests", "30", "--warmup", "3", "--repeat", "1",
           "--kinds", "trio,asyncio,blocking",
           "--timeout", "30", "--json"]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        inner = " ".join(f"'{c}'" for c in cmd)  # a private network namespace
        cmd = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"]
    report = run_json(cmd, "request_bench.py", timeout=120)
    for kind in ("trio", "asyncio", "blocking"):
        for what in ("1 hop", "2 hops", "sync"):
            row = report[kind][what]
            assert 0 < row["p50_ms"] <= row["p99_ms"], (kind, what)
            assert len(row["runs_p50_ms"]) == 1
        # a request crosses the mesh and back: more than one API round trip
        assert report[kind]["1 hop"]["p50_ms"] > report[kind]["sync"]["p50_ms"]
    assert report["params"]["requests"] == 30
