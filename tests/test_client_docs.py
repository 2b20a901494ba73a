"""The Python examples of docs/api.md and README.md, run as written.

Every fenced block after `<!-- tested: python -->` runs in its own interpreter with
only P2PNODE_SOCKET set (to node b's socket, b linked to a); where a ```text block
follows it, the output must have that shape (ids and numbers may differ).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import trio

from .conftest import loopback_config, running_nodes
from .test_docs import matches

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(
    r"<!-- tested: python -->\n```python\n(.*?)```\n(?:\n```text\n(.*?)```)?", re.S)


def python_blocks(doc: Path) -> list[tuple[str, list[str] | None]]:
    return [(code, out.splitlines() if out else None)
            for code, out in PYTHON_BLOCK.findall(doc.read_text())]


def test_the_python_examples_are_found() -> None:
    api = python_blocks(ROOT / "docs" / "api.md")
    assert len(api) == 5
    assert all(out for _, out in api)
    assert "p2pnode.client.aio" in api[0][0]
    assert len(python_blocks(ROOT / "README.md")) == 1


@pytest.mark.parametrize(("doc", "index"), [("docs/api.md", 0), ("docs/api.md", 1),
                                            ("docs/api.md", 2), ("docs/api.md", 3),
                                            ("docs/api.md", 4),
                                            ("README.md", 0)])
async def test_python_example_runs_as_written(short_tmp: Path, doc: str, index: int) -> None:
    code, expected = python_blocks(ROOT / doc)[index]
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            assert a.listen_addr is not None
            cfg_b = loopback_config(short_tmp, "b", peers=(("127.0.0.1", a.listen_addr[1]),))
            async with running_nodes([cfg_b]) as (b,):
                await b.wait_peer_count(1, 1)
                env["P2PNODE_SOCKET"] = str(cfg_b.socket_path)
                done = await trio.run_process([sys.executable, "-c", code], env=env,
                                              capture_stdout=True, capture_stderr=True,
                                              check=False)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    if expected is not None:
        assert len(lines) == len(expected), lines
        for want, got in zip(expected, lines, strict=True):
            assert matches(want, got), (want, got)
