"""The real command line, in subprocesses: three nodes in a line, send at one end,
recv at the other. Only loopback; mDNS off."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

P2PNODE = [sys.executable, "-m", "p2pnode.cli"]


class Proc:
    """A subprocess whose stderr (or ``stream``: its stdout) is read line by line."""

    def __init__(self, process: trio.Process,
                 stream: trio.abc.ReceiveStream | None = None) -> None:
        self.process = process
        self.stream = stream or process.stderr
        self._buf = b""
        self.seen: list[str] = []

    async def wait_line(self, pattern: str) -> re.Match[str]:
        """Read stderr until a line matches ``pattern`` (callers set a timeout)."""
        regex = re.compile(pattern)
        for line in self.seen:
            if m := regex.search(line):
                return m
        assert self.stream is not None
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.seen.append(line)
                if m := regex.search(line):
                    return m
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError(f"process ended before {pattern!r}: {self.seen}")
            self._buf += data


@asynccontextmanager
async def spawn(args: list[str], **kwargs: object) -> AsyncIterator[Proc]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        [*P2PNODE, *args], stderr=subprocess.PIPE, env=env, **kwargs  # type: ignore[arg-type]
    )
    try:
        yield Proc(process)
    finally:
        await reap(process)


async def reap(process: trio.Process) -> None:
    """Kill ``process`` if it still runs, wait for it and close its pipes."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
        await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def test_three_nodes_in_a_line(short_tmp: Path) -> None:
    def run_args(name: str, peer: str | None) -> list[str]:
        args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name,
                "--socket", str(short_tmp / f"{name}.sock"),
                "--data-dir", str(short_tmp / name)]
        return [*args, "--peer", peer] if peer else args

    with trio.fail_after(60):
        async with spawn(run_args("a", None)) as a:
            port_a = (await a.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
            async with spawn(run_args("b", f"127.0.0.1:{port_a}")) as b:
                port_b = (await b.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
                async with spawn(run_args("c", f"127.0.0.1:{port_b}")) as c:
                    await b.wait_line("link up: c")
                    await b.wait_line("link up: a")
                    await c.wait_line("link up: b")
                    recv = await trio.lowlevel.open_process(
                        [*P2PNODE, "recv", "--socket", str(short_tmp / "c.sock"),
                         "--topic", "news", "--count", "3"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    )
                    try:
                        await Proc(recv).wait_line("subscribed to news")
                        sent = await trio.run_process(
                            [*P2PNODE, "send", "--socket", str(short_tmp / "a.sock"),
                             "--topic", "news"],
                            stdin=b"first\nsecond\nthird\n", capture_stdout=True,
                        )
                        assert sent.returncode == 0
                        assert recv.stdout is not None
                        out = b""
                        while out.count(b"\n") < 3:
                            chunk = await recv.stdout.receive_some(65536)
                            assert chunk, "recv ended early"
                            out += chunk
                        assert await recv.wait() == 0
                    finally:
                        await reap(recv)
                    # topic, origin (its name, or the start of its id while c's mesh
                    # view does not have a's link list yet), text
                    lines = out.decode().splitlines()
                    assert [line.split("\t")[::2] for line in lines] == [
                        ["news", "first"], ["news", "second"], ["news", "third"]]
                    assert all(re.fullmatch(r"news\t(a|[0-9a-f]{8})\t\w+", line)
                               for line in lines), lines
                    # Graceful shutdown: SIGTERM exits 0 and removes the socket.
                    for proc, name in ((c, "c"), (b, "b"), (a, "a")):
                        proc.process.send_signal(signal.SIGTERM)
                        assert await proc.process.wait() == 0
                        assert not (short_tmp / f"{name}.sock").exists()


async def test_cli_errors_are_clear(short_tmp: Path) -> None:
    with trio.fail_after(30):
        res = await trio.run_process(
            [*P2PNODE, "status", "--socket", str(short_tmp / "none.sock")],
            capture_stderr=True, check=False,
        )
        assert res.returncode == 1
        assert b"no node at the socket" in res.stderr
        res = await trio.run_process(
            [*P2PNODE, "run", "--listen", "127.0.0.1:99999", "--no-mdns"],
            capture_stderr=True, check=False,
        )
        assert res.returncode == 1
        assert b"port must be 0-65535" in res.stderr
