"""The routed lab (scripts/routedlab.py): subnets behind a router namespace, and the
CPU throttle that makes a node slow. Addresses and arguments are checked anywhere;
building the lab needs root and iproute2 (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from scripts.netlab import LabError, list_netns
from scripts.routedlab import RoutedLab, cpu_throttle, netns_problem

STAND_IN = [sys.executable, "-c", "import time; time.sleep(60)"]
needs_netns = pytest.mark.skipif(netns_problem() is not None, reason=str(netns_problem()))


def test_layout_addresses_and_per_host_arguments(tmp_path: Path) -> None:
    lab = RoutedLab(3, 2, base="10.99", host_args={"h3": ["--peer", "10.99.1.1:7420"]},
                    node_args=["--no-mdns"], lab_dir=tmp_path, start_nodes=False)
    assert lab.host_names == ["h1", "h2", "h3", "h4", "h5", "h6"]
    assert [lab.addr(h) for h in lab.host_names] == [
        "10.99.1.1", "10.99.1.2", "10.99.2.1", "10.99.2.2", "10.99.3.1", "10.99.3.2"]
    assert lab.hosts_in(2) == ["h3", "h4"]
    assert lab.router_addr(3) == "10.99.3.254"
    assert lab.node_addr("h1") == "10.99.1.1:7420"
    command = lab.node_command("h3")
    assert command[-3:] == ["--no-mdns", "--peer", "10.99.1.1:7420"]
    assert lab.node_command("h4")[-1] == "--no-mdns"


@pytest.mark.parametrize(("kw", "message"), [
    ({"base": "10.300"}, "bad base '10.300'"), ({"base": "10"}, "bad base '10'"),
    ({"subnets": 0}, "0 subnets of 3 hosts"), ({"per_subnet": 251}, "3 subnets of 251"),
])
def test_bad_layouts_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(LabError, match=message):
        RoutedLab(**kw)  # type: ignore[arg-type]


@needs_netns
@pytest.mark.netns
def test_the_router_joins_the_subnets_and_everything_goes_on_failure(tmp_path: Path) -> None:
    before = set(list_netns())
    prefix = f"p2pr-{uuid.uuid4().hex[:6]}"
    lab = RoutedLab(3, 2, prefix=prefix, base=f"10.{uuid.uuid4().int % 90 + 110}",
                    lab_dir=tmp_path, start_nodes=False)
    lab.node_cmd = STAND_IN
    started: list[int] = []

    def checks() -> None:
        with lab:
            assert lab.ping("h1", "h6")  # across the router, both ways
            assert lab.ping("h4", "h1")
            assert lab.ping("h1", "h2")  # within a subnet
            route = lab.exec("h3", ["ip", "route"], capture_output=True, text=True).stdout
            assert f"default via {lab.router_addr(2)}" in route
            started.append(lab.start_node("h5"))
            raise RuntimeError("a failing check")

    with pytest.raises(RuntimeError, match="a failing check"):
        checks()
    assert not {ns for ns in set(list_netns()) - before if ns.startswith(prefix)}
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(os.geteuid() != 0, reason="throttling another process needs root")
def test_cpu_throttle_slows_a_busy_process_and_lets_it_go() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        cgroup_before = Path(f"/proc/{busy.pid}/cgroup").read_text()
        start = cpu_seconds(busy.pid)
        began = time.monotonic()
        with cpu_throttle(busy.pid, share=0.05) as how:
            time.sleep(1.0)  # real time is the point: the process runs on its own
        used = cpu_seconds(busy.pid) - start
        spent = time.monotonic() - began
        assert how in ("cgroup v2", "cgroup v1", "SIGSTOP bursts")
        assert used < 0.35 * spent, (how, used, spent)  # 5 % asked, far from a full CPU
        assert Path(f"/proc/{busy.pid}/cgroup").read_text() == cgroup_before
        after = cpu_seconds(busy.pid)
        time.sleep(0.5)
        assert cpu_seconds(busy.pid) - after > 0.1  # running freely again
    finally:
        busy.kill()
        busy.wait()
