"""The simulator (scripts/simulate.py) at small size: figures consistent, runs repeatable."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from p2pnode.config import NodeConfig

NODE_DEFAULTS = NodeConfig()
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
    # Without jitter the first copy to arrive came the shortest way.
    short = run("--nodes", "40", "--topology", "ring", "--messages", "5", "--drain", "2",
                "--max-hops", "16", "--jitter-ms", "0")
    check_consistent(short)
    assert short["delivery_ratio"] < 1.0  # a hop limit of 16 cannot span 20 hops
    assert short["hops_max"] == 16
    full = run("--nodes", "40", "--topology", "ring", "--messages", "5",  # default 32
               "--jitter-ms", "0")
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


def test_defaults_are_a_lan_and_help_shows_them() -> None:
    # Virtual time with 0 ms links made every delivery instantaneous: a plot with
    # nothing to show. The default is LAN-like: latencies spread over a few ms.
    r = run("--nodes", "30", "--messages", "5")
    check_consistent(r)
    assert (r["latency_ms"], r["jitter_ms"]) == (1.0, 1.0)
    assert 1.0 <= r["latency_p50_ms"] < r["latency_max_ms"] < 20.0
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    flat = " ".join(out.split())
    for text in ("--latency-ms MS one-way latency per link, ms (a LAN: switches, Wi-Fi) "
                 "(default: 1.0)", "--nodes N nodes in the mesh (default: 50)",
                 "default 6, or --nodes - 1 if that is less"):
        assert text in flat, text
    assert "(default: None)" not in flat
    assert "(default: False)" not in flat
    opts, _ = sim.parse_args(["--nodes", "4"])  # the default degree fits small meshes
    assert opts.degree == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--nodes", "10", "--publishers", "20"],
     "--publishers 20: each publisher is a different node, so it must be 1-10"),
    (["--latency-ms", "-1"], "--latency-ms -1: must be a number of at least 0"),
    (["--jitter-ms", "nan"], "--jitter-ms nan: must be a number of at least 0"),
    (["--nodes", "5", "--degree", "10"],
     "--degree 10 with 5 nodes: a node links to 1-4 others"),
    (["--nodes", "0"], "--nodes 0: a mesh needs at least 1 node"),
    (["--messages", "-3"], "--messages -3: must be at least 0"),
    (["--payload", "600000"], "--payload 600000: a message is 0-524288 bytes"),
    (["--max-hops", "0"], "--max-hops 0: must be 1-255"),
    (["--churn", "1"], "--churn 1: a fraction of the nodes"),
    (["--nodes", "10", "--publishers", "5", "--churn", "0.9"],
     "--churn 0.9 crashes 9 nodes, but only 5 are not publishers"),
    (["--rejoin"], "--rejoin restarts the nodes that --churn crashes"),
    (["--nodes", "1", "--partition", "5"], "--partition splits the nodes in two halves"),
    (["--window", "-1"], "--window -1: must be a number of at least 0"),
    (["--ping-interval", "5", "--link-timeout", "5"], "--link-timeout 5: must exceed"),
    (["--latency-ms", "9000"],
     "--latency-ms 9000 + --jitter-ms 1: a round trip must take less than --link-timeout"),
])
def test_impossible_settings_are_refused(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(argv, message, capsys)


def assert_refused(argv: list[str], message: str,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """``parse_args(argv)`` exits 2 with ``message`` (also for test_simtopics.py)."""
    with pytest.raises(SystemExit) as exit_info:
        sim.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"simulate.py: error: {message}" in err


def test_a_refusal_from_the_command_line_has_no_traceback() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--nodes", "10", "--publishers", "20",
                          "--latency-ms", "-5"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    # Every problem is named, not only the first.
    assert "--publishers 20" in res.stderr
    assert "--latency-ms -5" in res.stderr


@pytest.mark.parametrize(("name", "message"), [
    ("nodir/x.png", "the directory {tmp}/nodir does not exist"),
    ("m.jpgx", "the file name must end in a format matplotlib writes: "),
    ("noext", "the file name must end in a format matplotlib writes: "),
    (".", "that is a directory"),
])
def test_the_plot_path_is_checked_before_the_run(
        name: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sim, "run_simulation", lambda *a: pytest.fail("the run started"))
    path = tmp_path / name if name != "." else tmp_path
    with pytest.raises(SystemExit) as exit_info:
        sim.main(["--nodes", "5", "--plot", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--plot {path}: " + message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_a_plot_without_matplotlib_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sim, "run_simulation", lambda *a: pytest.fail("the run started"))
    monkeypatch.setitem(sys.modules, "networkx", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_info:
        sim.main(["--nodes", "5", "--plot", str(tmp_path / "mesh.png")])
    assert exit_info.value.code == 2
    assert ("--plot needs matplotlib and networkx (networkx is not installed): "
            "pip install 'p2pnode[sim]'") in capsys.readouterr().err


def test_the_plot_is_drawn(tmp_path: Path) -> None:
    opts, _ = sim.parse_args(["--nodes", "20", "--messages", "3", "--plot",
                              str(tmp_path / "mesh.svg")])
    result, done = sim.run_simulation(opts)
    first = done.stats.first_receipt[done.stats.pub_order[0]]
    assert max(first.values()) > min(first.values())  # the colours show something
    sim.plot(done, result, opts.plot)
    assert (tmp_path / "mesh.svg").read_text().startswith("<?xml")


def test_output_into_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    # `simulate.py | head -1` once head has gone: no BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert sim.main(["--nodes", "2", "--messages", "1"]) == 0


# -- --topology join: membership (issue 18) -------------------------------------------------

JOIN_UNSTABLE = (*UNSTABLE, "wall_converge_seconds")


def run_join(*argv: str) -> dict[str, Any]:
    r = run("--topology", "join", "--seed", "4", *argv)
    for key in ("membership_converged_s", "components_converged", "false_suspicions",
                "false_deaths", "frames_lost", "member_events", "virtual_run_s",
                "member_rate_limited"):
        assert key in r, key
    return r


def test_join_figures_are_repeatable() -> None:
    argv = ("--nodes", "12", "--converge-max", "20", "--measure", "5", "--after-kill", "8",
            "--loss", "0.02")
    a, b = run_join(*argv), run_join(*argv)
    for key in JOIN_UNSTABLE:
        a.pop(key, None)
        b.pop(key, None)
    assert a == b
    assert a["frames_lost"] > 0


def test_join_through_one_seed_converges_and_outlives_the_seed() -> None:
    r = run_join("--nodes", "40", "--converge-max", "30", "--measure", "35",
                 "--after-kill", "15")
    assert r["membership_converged_s"] is not None
    assert r["membership_converged_s"] <= 30.0
    assert r["components_converged"] == 1
    assert r["max_degree"] <= NODE_DEFAULTS.max_links
    assert 0 < r["membership_bytes_per_s_per_node"] < 1000
    assert r["still_converged_after_measure"]
    assert r["connected_after_seed_kill"]
    assert r["knows_all_after_seed_kill"] == 39  # every live node knows every live node
    assert r["seeds_dead_everywhere_s"] is not None
    assert r["false_deaths"] == 0


def test_join_under_five_percent_loss_declares_no_live_member_dead() -> None:
    r = run_join("--nodes", "30", "--seeds", "2", "--loss", "0.05", "--converge-max", "60",
                 "--measure", "40", "--after-kill", "15")
    assert r["frames_lost"] > 100
    assert r["membership_converged_s"] is not None
    assert r["false_deaths"] == 0
    assert r["connected_after_seed_kill"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--topology", "join", "--nodes", "5", "--seeds", "6"], "--seeds 6: must be 1-5"),
    (["--topology", "join", "--loss", "0.7"], "--loss 0.7: a share of the frames, 0-0.5"),
    (["--topology", "join", "--measure", "0"], "--measure 0: must be more than 0"),
    (["--loss", "0.1", "--seeds", "2"], "--seeds, --loss: only with --topology join"),
])
def test_impossible_join_settings_are_refused(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sim.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_the_membership_frames_counted_are_the_wires() -> None:
    from p2pnode.wire import messages

    simjoin = sys.modules["simjoin"]
    for name, tag in simjoin.MEMBER_FRAMES.items():
        assert getattr(messages, name).__struct_config__.tag == tag, name


def test_the_trace_names_each_missed_delivery_and_the_way_its_batch_went(
        tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    r = run("--nodes", "40", "--topology", "ring", "--messages", "5", "--drain", "2",
            "--max-hops", "16", "--jitter-ms", "0", "--trace", str(path))
    missed = r["possible_deliveries"] - r["deliveries"]
    assert missed > 0
    assert len(r["missed"]) == min(10, missed)
    assert r["missed_cut_off"] == 0
    trace = json.loads(path.read_text())
    assert trace["missed_total"] == missed
    assert len(trace["missed"]) == min(20, missed)
    assert trace["events_dropped"] == 0
    for m in trace["missed"]:
        apart = abs(m["node"] - m["origin"])
        assert min(apart, 40 - apart) > 16  # out of reach of the hop limit both ways
        assert not m["cut_off"]  # a path to it remained: the hop limit stopped it
        assert m["origin_state"] == "alive"
        assert m["origin_counts_it"]
        assert m["origin_way"] is None  # (tree mode: no routes)
        assert m["links_start"] == sorted({(m["node"] - 1) % 40, (m["node"] + 1) % 40})
        copies = [e for e in m["events"] if e[1] == "batch"]
        assert copies
        assert all(e[3] != m["node"] for e in copies)
        assert max(e[5] for e in copies) == 16  # the copies went as far as the limit
