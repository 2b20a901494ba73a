"""contrib/: the example configuration file loads, the systemd unit verifies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.config.file import load_file

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def test_example_config_file_is_valid() -> None:
    values = load_file(CONTRIB / "p2pnode.toml")
    assert values["api_group"][0] == "p2pnode"
    assert values["listen"][0] == "0.0.0.0:7420"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (CONTRIB / "p2pnode.service").read_text()
    for line in ("Type=notify", "RuntimeDirectory=p2pnode", "StateDirectory=p2pnode",
                 "Environment=P2PNODE_SOCKET=/run/p2pnode/p2pnode.sock", "User=p2pnode"):
        assert line in unit.splitlines()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    exe = Path(sys.executable).parent / "p2pnode"
    (tmp_path / "p2pnode.service").write_text(unit.replace("/opt/p2pnode/bin/p2pnode", str(exe)))
    res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "p2pnode.service")],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert "p2pnode.service" not in res.stderr, res.stderr
