"""Tests of the namespace lab (scripts/netlab.py and scripts/lab.py), with a stand-in node.

They need root and iproute2, and only touch namespaces they create (prefix ``p2pt-``).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.netlab import Lab, LabError, environment_problem, list_netns

REPO = Path(__file__).resolve().parent.parent
STAND_IN = [sys.executable, "-c", "import time; time.sleep(60)"]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(environment_problem() is not None, reason=str(environment_problem())),
]


def root_links() -> list[str]:
    """The root namespace's interfaces (names and flags), to check nothing was added."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(line.split(" link/")[0].split(":", 1)[1] for line in out.stdout.splitlines())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def prefix() -> str:
    return f"p2pt-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def clean_machine(prefix: str) -> Iterator[None]:
    """Check the test leaves namespaces and root links as they were.

    Namespaces that appear meanwhile without this test's prefix belong to someone else
    (a parallel run) and are not this test's business.
    """
    netns_before, links_before = set(list_netns()), root_links()
    yield
    netns_after = set(list_netns())
    assert netns_before <= netns_after
    assert [ns for ns in netns_after - netns_before if ns.startswith(prefix)] == []
    assert root_links() == links_before


def test_lab_links_nodes_and_teardown(prefix: str, tmp_path: Path, clean_machine: None) -> None:
    with Lab(3, prefix=prefix, lab_dir=tmp_path, node_cmd=STAND_IN) as lab:
        pids = [lab.node_pid(h) for h in lab.host_names]
        for host, pid in zip(lab.host_names, pids, strict=True):
            assert pid is not None
            assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [
                sys.executable.encode(), b"-c"]  # exec'd: no longer `ip netns exec`
            # The node itself (not just `ip`) lives in the host's namespace.
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(
                f"/run/netns/{lab.netns(host)}").st_ino
        assert [lab.addr(h) for h in lab.host_names] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]

        assert lab.ping("h1", "h2")
        assert lab.ping("h3", "h1")
        lab.link_down("h2")
        assert not lab.link_is_up("h2")
        assert not lab.ping("h1", "h2", timeout=0.5)
        assert not lab.ping("h2", "h3", timeout=0.5)
        assert lab.ping("h1", "h3")
        lab.link_up("h2")
        assert lab.ping("h1", "h2")

        done = lab.exec("h3", ["sh", "-c", 'echo "$P2PNODE_SOCKET $P2PLAB_ADDR"'],
                        capture_output=True, text=True, check=True)
        assert done.stdout.split() == [str(lab.socket_path("h3")), "10.77.0.3"]
    assert not any(alive(pid) for pid in pids if pid is not None)


def test_stop_start_and_signal(prefix: str, tmp_path: Path, clean_machine: None) -> None:
    with Lab(2, prefix=prefix, lab_dir=tmp_path, node_cmd=STAND_IN) as lab:
        first = lab.node_pid("h1")
        assert first is not None
        assert lab.stop_node("h1") == -signal.SIGTERM
        assert lab.node_pid("h1") is None
        with pytest.raises(LabError, match="no node"):
            lab.signal("h1", signal.SIGCONT)
        second = lab.start_node("h1")
        assert second != first
        with pytest.raises(LabError, match="running already"):
            lab.start_node(1)
        lab.signal("h1", signal.SIGSTOP)  # a stopped node still stops (TERM + CONT)
        assert lab.stop_node("h1", timeout=2) == -signal.SIGTERM
        lab.signal("h2", signal.SIGKILL)
        assert lab.stop_node("h2") == -signal.SIGKILL
        assert not alive(second)


def test_cli_acts_on_a_lab_made_elsewhere(prefix: str, tmp_path: Path,
                                          clean_machine: None) -> None:
    def lab_py(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "scripts" / "lab.py"), "--prefix", prefix,
             "--lab-dir", str(tmp_path), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )

    made = lab_py("create", "--hosts", "2", "--node-cmd", shlex.join(STAND_IN))
    assert made.returncode == 0, made.stderr
    try:
        lab = Lab.load(tmp_path)
        pid = lab.node_pid("h2")
        assert pid is not None
        assert lab_py("ping", "h1", "h2").returncode == 0
        assert lab_py("down", "h2").returncode == 0
        assert lab_py("ping", "h1", "h2").returncode == 1
        assert lab_py("up", "h2").returncode == 0
        shown = lab_py("exec", "h2", "sh", "-c", "echo $P2PNODE_SOCKET")
        assert shown.stdout.strip() == str(tmp_path / "h2" / "node.sock")
        assert lab_py("kill", "h2", "--signal", "STOP").returncode == 0
        assert lab_py("stop", "h2").returncode == 0
        assert not alive(pid)
        assert "not running" in lab_py("status").stdout
    finally:
        assert lab_py("destroy").returncode == 0
    assert lab_py("destroy").returncode == 0  # idempotent
    assert lab_py("status").returncode == 1  # no lab any more


def test_half_built_lab_is_removed(prefix: str, tmp_path: Path, clean_machine: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    build_host = Lab._build_host

    def failing(self: Lab, name: str) -> None:
        if name == "h2":
            raise KeyboardInterrupt
        build_host(self, name)

    monkeypatch.setattr(Lab, "_build_host", failing)
    with pytest.raises(KeyboardInterrupt):
        Lab(3, prefix=prefix, lab_dir=tmp_path, node_cmd=STAND_IN).create()


def test_existing_lab_is_not_overwritten(prefix: str, tmp_path: Path,
                                         clean_machine: None) -> None:
    with Lab(1, prefix=prefix, lab_dir=tmp_path / "a", start_nodes=False):
        with pytest.raises(LabError, match="exists already"):
            Lab(1, prefix=prefix, lab_dir=tmp_path / "b").create()
        assert f"{prefix}-h1" in list_netns()  # the failed create did not destroy it


def test_cli_refuses_without_root(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("lab_cli", REPO / "scripts" / "lab.py")
    assert spec is not None
    assert spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert module.main(["status"]) == 2
    assert "needs root" in capsys.readouterr().err
