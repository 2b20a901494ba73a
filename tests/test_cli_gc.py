"""``quiet_gc``: once a node runs, the objects made while it started are out of the
garbage collector's sight and young collections are rarer (docs/performance.md,
"Garbage collection pauses"). In a fresh interpreter, since it changes the process."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from p2pnode.cli.main import quiet_gc
before = gc.get_freeze_count()
quiet_gc()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "threshold": gc.get_threshold(), "enabled": gc.isenabled()}))
"""


def test_quiet_gc_freezes_what_exists_and_keeps_collecting() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["before"] == 0
    assert got["frozen"] > 10_000  # the modules, classes and functions loaded so far
    assert got["threshold"] == [20_000, 10, 10]
    assert got["enabled"]  # new objects are still collected
