"""Running a benchmark script from a test: its JSON report, or a clear failure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def package_copy(tmp: Path) -> Path:
    """A copy of this checkout's ``p2pnode`` package in ``tmp`` (for a benchmark's
    ``--base``: another version of the code, here the same one); returns ``tmp``."""
    shutil.copytree(ROOT / "p2pnode", tmp / "p2pnode",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp


def run_json(cmd: list[str], name: str, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` (a benchmark with ``--json``) and return its report. A hang or a
    non-zero exit fails the test with the script's own output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a hang is a failure
        pytest.fail(f"{name} did not finish: {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report
