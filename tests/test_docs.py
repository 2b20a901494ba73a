"""The documentation's examples, run as written.

docs/api.md: every fenced block after `<!-- tested: shell -->` (socat and nc), and the
Node.js block after `<!-- tested: node -->`, against nodes a and b linked on loopback,
with only P2PNODE_SOCKET set (to b's socket). docs/cli.md: every flag is described.
Every Python file the docs name (docs/architecture.md's module table and the others)
exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pnode.cli.parser import build_parser

from .test_cli import P2PNODE, reap, spawn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- tested: (\w+) -->\n```\w+\n(.*?)```", re.S)


def blocks(kind: str, doc: Path = DOCS / "api.md") -> list[str]:
    return [body for k, body in BLOCK.findall(doc.read_text()) if k == kind]


def commands(block: str) -> list[tuple[str, list[str]]]:
    """The commands of a block, each with the output lines (``# {...}``) under it."""
    out: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.splitlines():
        if line.startswith("# {"):
            out[-1][1].append(line[2:])
        elif continued:
            out[-1] = (out[-1][0] + "\n" + line, out[-1][1])
        elif line.strip() and not line.startswith("#"):
            out.append((line, []))
        continued = line.endswith("\\")
    return out


def _norm(text: str) -> str:
    return re.sub(r"\d+", "N", re.sub(r"[0-9a-f]{8,}", "H", text))


def matches(expected: str, actual: str) -> bool:
    """Whether a line has the documented shape: ids, numbers and times may differ,
    ``...`` stands for anything."""
    pattern = re.escape(_norm(expected)).replace(re.escape("..."), ".*")
    return re.fullmatch(pattern, _norm(actual)) is not None


class Lines:
    """The lines of a stream, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buf = stream, b""

    async def next(self) -> str:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            assert data, f"the stream ended; left: {self.buf!r}"
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def test_doc_blocks_are_found() -> None:
    shell = [cmd for block in blocks("shell") for cmd, _ in commands(block)]
    assert len(shell) == 10
    assert sum("socat" in c for c in shell) == 6
    assert sum("nc -" in c for c in shell) == 4
    assert len(blocks("node")) == 1
    assert matches('{"id":1,"ok":true,"msg_id":"e45b23e6668eab6e0000000000000007","peers":1}',
                   '{"id":1,"ok":true,"msg_id":"0123456789abcdef0000000000000012","peers":1}')
    assert not matches('{"ok":true,"name":"b",...}', '{"ok":true,"name":"a","x":1}')


def test_cli_doc_mentions_every_command_and_flag() -> None:
    text = (DOCS / "cli.md").read_text()
    parser = build_parser()
    assert "`p2pnode --version`" in text
    sub = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        assert f"\n## {name}\n" in text, name
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert re.search(rf"{flag}\b", section), f"{name} {flag}"
                    if flag != "--socket":  # described once, in "The socket"
                        assert f"| `{flag}" in section, f"{name} {flag} has no table row"


async def start_node(stack: AsyncExitStack, tmp: Path, name: str, peer: str | None) -> str:
    """Start ``p2pnode run`` for ``name``; return its port."""
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name, "--socket",
            str(tmp / f"{name}.sock"), "--data-dir", str(tmp / name)]
    proc = await stack.enter_async_context(spawn(args + (["--peer", peer] if peer else [])))
    port = (await proc.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
    if peer:
        await proc.wait_line("link up: ")
    return port


async def run_until(cmd: list[str], env: dict[str, str], expected: list[str],
                    trigger: Callable[[], Awaitable[object]], stdin: bytes | None = None) -> None:
    """Run ``cmd``, which does not end by itself; after its first expected line, call
    ``trigger`` and wait for the other lines (other lines in between are skipped);
    then stop it (its whole process group: a pipeline this test started)."""
    proc = await trio.lowlevel.open_process(
        cmd, env=env, stdout=subprocess.PIPE, start_new_session=True,
        stdin=subprocess.PIPE if stdin is not None else None)
    try:
        if stdin is not None:
            assert proc.stdin is not None
            await proc.stdin.send_all(stdin)
        out = Lines(proc.stdout)  # type: ignore[arg-type]
        first = await out.next()
        assert matches(expected[0], first), (expected[0], first)
        await trigger()
        for line in expected[1:]:
            while not matches(line, (got := await out.next())):
                print("skipped:", got)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
        await reap(proc)


@pytest.mark.skipif(not (shutil.which("socat") and shutil.which("nc")),
                    reason="needs socat and nc (netcat-openbsd)")
async def test_api_shell_examples_run_as_written(short_tmp: Path) -> None:
    env = {**os.environ, "P2PNODE_SOCKET": str(short_tmp / "b.sock")}

    async def publish() -> None:
        await trio.run_process([*P2PNODE, "send", "--socket", str(short_tmp / "a.sock"),
                                "--topic", "chat", "seen by socat"], capture_stdout=True)

    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            port_a = await start_node(stack, short_tmp, "a", None)
            port_b = await start_node(stack, short_tmp, "b", f"127.0.0.1:{port_a}")

            async def third_node() -> None:
                await start_node(stack, short_tmp, "c", f"127.0.0.1:{port_b}")

            # README.md's block is one script (it sets SOCK, then uses it).
            (script,) = blocks("script", DOCS.parent / "README.md")
            res = await trio.run_process(["bash", "-c", script], env=env, capture_stdout=True)
            replies = [json.loads(line) for line in res.stdout.decode().splitlines()]
            assert [r["ok"] for r in replies] == [True, True]
            for block in blocks("shell"):
                for cmd, expected in commands(block):
                    argv = ["bash", "-c", cmd]
                    if "sleep infinity" in cmd:
                        trigger = third_node if "monitor" in cmd else publish
                        await run_until(argv, env, expected, trigger)
                    elif "|" not in cmd:  # interactive: type one request
                        await run_until(argv, env, ['{"id":1,"ok":true,...}'],
                                        trio.lowlevel.checkpoint,
                                        stdin=b'{"op":"status","id":1}\n')
                    else:
                        res = await trio.run_process(argv, env=env, capture_stdout=True)
                        lines = res.stdout.decode().splitlines()
                        assert len(lines) == len(expected), (cmd, lines)
                        for want, got in zip(expected, lines, strict=True):
                            assert matches(want, got), (cmd, want, got)
                            assert json.loads(got)["ok"] is True


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js")
async def test_api_nodejs_example_runs(short_tmp: Path) -> None:
    (short_tmp / "chat.js").write_text(blocks("node")[0])
    env = {**os.environ, "P2PNODE_SOCKET": str(short_tmp / "b.sock")}
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            port_a = await start_node(stack, short_tmp, "a", None)
            await start_node(stack, short_tmp, "b", f"127.0.0.1:{port_a}")

            async def publish() -> None:
                await trio.run_process([*P2PNODE, "send", "--socket", str(short_tmp / "a.sock"),
                                        "--topic", "chat", "hi from a"], capture_stdout=True)

            await run_until(["node", str(short_tmp / "chat.js")], env, [
                "[chat] 15b8fe0a: hello from Node.js",
                "published 8345ee8b407ef401000000000000000a to 1 peer(s)",
                "[chat] 1b884466: hi from a",
            ], publish)


#: A Python file named in prose: ``errors.py``, ``gossip/router.py``, ``p2pnode/x/y.py``.
PY_FILE = re.compile(r"(?<![\w./-])((?:[\w-]+/)*\w+\.py)(?![\w/])")
SOURCE_DIRS = ("p2pnode", "scripts", "tests", "examples")
DOCUMENTS = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted(DOCS.glob("*.md"))]


def py_files_named(text: str) -> set[str]:
    return set(PY_FILE.findall(text))


def exists(name: str) -> bool:
    """A path is taken from the repository root or from ``p2pnode/``; a bare file name
    may be anywhere in the sources, the scripts, the tests or the examples."""
    if "/" in name:
        return (ROOT / name).is_file() or (ROOT / "p2pnode" / name).is_file()
    return any(next((ROOT / d).rglob(name), None) is not None for d in SOURCE_DIRS)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_file_the_docs_name_exists(doc: Path) -> None:
    missing = sorted(name for name in py_files_named(doc.read_text()) if not exists(name))
    assert missing == []


def test_the_architecture_names_the_modules() -> None:
    names = py_files_named((DOCS / "architecture.md").read_text())
    assert {"gossip/router.py", "node/node.py", "errors.py", "scripts/netlab.py"} <= names
    # Control: names are read whole, and a missing one is caught.
    assert py_files_named("`p2pnode/config.py`, testing_lab.py, see a/b.py.") == {
        "p2pnode/config.py", "testing_lab.py", "a/b.py"}
    assert not exists("p2pnode/config.py")
    assert not exists("testing_lab.py")
    assert exists("config/settings.py")
    assert exists("test_docs.py")


def test_the_architecture_names_every_module() -> None:
    # And the other way round: a new module gets its line in docs/architecture.md.
    names = py_files_named((DOCS / "architecture.md").read_text())
    unnamed = [path.relative_to(ROOT / "p2pnode").as_posix()
               for path in sorted((ROOT / "p2pnode").rglob("*.py"))
               if path.name not in ("__init__.py", "__main__.py")
               and path.relative_to(ROOT / "p2pnode").as_posix() not in names
               and path.name not in names]
    assert unnamed == []
