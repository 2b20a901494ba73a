"""The pure core (wire/, gossip/, api/protocol.py, api/status.py) loads neither trio nor
zeroconf."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE = [
    "p2pnode.wire.frames",
    "p2pnode.wire.messages",
    "p2pnode.wire.link",
    "p2pnode.gossip.seen",
    "p2pnode.gossip.router",
    "p2pnode.api.protocol",
    "p2pnode.api.status",
]
HEAVY = ["trio", "zeroconf"]

# argv: the repository root, the heavy packages (comma-separated), then the modules to import.
PROBE = """
import importlib, json, sys
root, heavy, modules = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
sys.path.insert(0, root)
for name in modules:
    importlib.import_module(name)
print(json.dumps({"imported": [n for n in modules if n in sys.modules],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def imports_in_fresh_interpreter(modules: list[str]) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(ROOT), ",".join(HEAVY), *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_pure_core_does_not_load_trio_or_zeroconf() -> None:
    result = imports_in_fresh_interpreter(PURE)
    assert result["imported"] == PURE
    assert result["loaded"] == []


@pytest.mark.parametrize("module", PURE)
def test_each_pure_module_alone(module: str) -> None:
    assert imports_in_fresh_interpreter([module])["loaded"] == []


def test_the_probe_detects_trio() -> None:
    # Control: an adapter module does load trio, so the check above can fail.
    assert "trio" in imports_in_fresh_interpreter(["p2pnode.net.outqueue"])["loaded"]
