"""scripts/bench.py runs real nodes on loopback and reports consistent figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"

FIELDS = ("hop1_msgs_per_s", "hop1_latency_p50_ms", "hop1_latency_p99_ms",
          "mesh10_msgs_per_s", "rss_mb_max", "raw_trio_msgs_per_s", "ratio_to_raw",
          "raw_relay_latency_p50_ms", "raw_relay_latency_p99_ms")


def _command() -> list[str]:
    cmd = [sys.executable, str(BENCH), "--quick", "--json"]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        # a private network namespace with only loopback
        inner = " ".join(f"'{c}'" for c in cmd)
        return ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"]
    return cmd


def test_bench_quick_json() -> None:
    try:
        proc = subprocess.run(_command(), capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"bench.py --quick did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    report = json.loads(lines[0])
    for field in FIELDS:
        assert isinstance(report[field], int | float), field
        assert report[field] > 0, (field, report[field])
    assert report["hop1_latency_p99_ms"] >= report["hop1_latency_p50_ms"]
    assert report["raw_relay_latency_p99_ms"] >= report["raw_relay_latency_p50_ms"]
    ratio = report["hop1_msgs_per_s"] / report["raw_trio_msgs_per_s"]
    assert report["ratio_to_raw"] == pytest.approx(ratio, rel=1e-2, abs=1e-3)
    assert report["security"] == {"tls": True, "signed": True, "members_only": False}
    assert report["ok"] is True
    assert report["problems"] == []
    clients = report["clients"]  # the shipped clients beside the hand-tuned path
    for kind in ("reference", "trio", "asyncio", "blocking"):
        assert clients[kind]["msgs_per_s"] > 0, kind
    for kind in ("trio", "asyncio", "blocking"):
        assert clients[kind]["p99_ms"] >= clients[kind]["p50_ms"] > 0, kind
    assert clients["request_rtt_us"] > 0
    assert clients["echo_rtt_us"] > 0
