"""The simulator (scripts/simulate.py) at small size: figures consistent, runs repeatable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "simulate.py"
UNSTABLE = ("wall_seconds", "wall_setup_seconds", "peak_rss_mb")


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("p2pnode_simulate", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sim = load()


def run(*argv: str) -> dict[str, Any]:
    opts, _ = sim.parse_args(list(argv))
    result, _ = sim.run_simulation(opts)
    return result


def check_consistent(r: dict[str, Any]) -> None:
    assert r["deliveries"] <= r["possible_deliveries"]
    assert r["possible_deliveries"] <= r["messages"] * r["nodes"]
    assert 0.0 <= r["delivery_ratio"] <= 1.0
    if r["delivery_ratio"] > 0:
        assert r["copies_per_delivery"] >= 1.0
    assert r["hops_max"] >= r["hops_p50"] >= 0
    assert r["latency_p99_ms"] >= r["latency_p50_ms"] >= 0
    assert r["duplicate_deliveries"] == 0
    for key in ("nodes", "messages", "seed", "topology", "degree", *UNSTABLE):
        assert key in r


@pytest.mark.parametrize("topology", ["random", "small-world", "discovery"])
def test_small_mesh_delivers_everything(topology: str) -> None:
    r = run("--nodes", "30", "--messages", "10", "--publishers", "2",
            "--topology", topology, "--latency-ms", "5", "--jitter-ms", "3", "--seed", "3")
    check_consistent(r)
    assert r["nodes"] == 30
    assert r["messages"] == 10
    assert r["delivery_ratio"] == 1.0
    assert r["possible_deliveries"] == 300
    assert r["hops_max"] >= 1
    assert r["latency_p50_ms"] > 0


def test_same_seed_same_figures() -> None:
    argv = ("--nodes", "40", "--messages", "20", "--publishers", "3",
            "--latency-ms", "10", "--jitter-ms", "5", "--churn", "0.1", "--seed", "7")
    a, b = run(*argv), run(*argv)
    check_consistent(a)
    for key in UNSTABLE:
        del a[key], b[key]
    assert a == b
    assert a["crashed"] == 4


def test_partition_and_churn_figures_stay_consistent() -> None:
    r = run("--nodes", "30", "--messages", "10", "--partition", "2", "--window", "3",
            "--churn", "0.2", "--rejoin", "--drain", "5", "--seed", "1")
    check_consistent(r)
    assert r["crashed"] == 6
    assert r["rejoined"] == 6


def test_ring_needs_hops() -> None:
    short = run("--nodes", "40", "--topology", "ring", "--messages", "5", "--drain", "2",
                "--max-hops", "16")
    check_consistent(short)
    assert short["delivery_ratio"] < 1.0  # a hop limit of 16 cannot span 20 hops
    assert short["hops_max"] == 16
    full = run("--nodes", "40", "--topology", "ring", "--messages", "5")  # default 32
    assert full["delivery_ratio"] == 1.0
    assert full["hops_max"] == 20


def test_json_output() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--nodes", "20", "--messages", "5", "--topology", "grid",
         "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    r = json.loads(out.stdout)
    check_consistent(r)
    assert r["topology"] == "grid"
    assert r["delivery_ratio"] == 1.0
