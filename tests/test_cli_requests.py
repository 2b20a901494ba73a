"""``p2pnode request`` and ``p2pnode serve`` in subprocesses, against real nodes on
loopback: a - b - c, and d on b (tests/test_requests.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from p2pnode.node import Node

from .test_cli import P2PNODE, Proc, reap
from .test_requests import four_nodes

#: Marks the sleeps of this run's commands (their command lines), not in the script.
MARK = str(os.getpid())
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MARK": MARK}
#: A command whose answer depends on the request: fails, hangs, floods, or answers.
SCRIPT = r"""
data=$(cat)
case "$data" in
  fail) echo "first line" >&2; echo "no such bulb" >&2; exit 3 ;;
  hang) exec sleep 30.1$MARK ;;
  hang-child) sleep 30.2$MARK & wait ;;
  flood) yes ;;
  *) echo "$P2PNODE_TOPIC is $data" ;;
esac
"""


@asynccontextmanager
async def serving(node: Node, *flags: str) -> AsyncIterator[Proc]:
    process = await trio.lowlevel.open_process(
        [*P2PNODE, "serve", "--socket", str(node.config.socket_path), "--topic", "lights",
         *flags, "--", "sh", "-c", SCRIPT],
        stderr=subprocess.PIPE, env=ENV)
    try:
        proc = Proc(process)
        await proc.wait_line("serving 'lights' with sh -c")
        yield proc
    finally:
        await reap(process)


async def request(node: Node, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*P2PNODE, "request", "--socket", str(node.config.socket_path), *args],
        stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=ENV)


def sleeping(marker: str) -> list[int]:
    """The pids of processes whose command line has ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


async def test_request_is_answered_by_a_command_two_hops_away(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with four_nodes(short_tmp) as mesh, serving(mesh["c"]) as served:
            done = await request(mesh["a"], "--topic", "lights", "on", "now")
            assert (done.returncode, done.stdout) == (0, b"c: lights is on now\n")
            await served.wait_line(r"request \w+ from \w+: answered, 17 bytes")
            from_stdin = await request(mesh["a"], "--topic", "lights", "--json",
                                       stdin=b"from stdin")
            assert from_stdin.returncode == 0
            assert json.loads(from_stdin.stdout) == {
                "from": mesh["c"].node_hex, "name": "c", "data": "lights is from stdin\n"}


async def test_serve_answers_failures_with_error_replies(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with four_nodes(short_tmp) as mesh, serving(
                mesh["c"], "--command-timeout", "2", "--max-output", "1000") as served:
            # 2 s, not less: the flood's shell must start and write within it on a busy
            # machine (with 0.5 s it once timed out first, under a full CPU).
            for data, error in (
                ("fail", "the command failed (exit status 3): no such bulb"),
                ("hang", "the command did not finish within 2s"),
                ("hang-child", "the command did not finish within 2s"),
                ("flood", "the command wrote more than 1000 bytes"),
            ):
                done = await request(mesh["a"], "--topic", "lights", data)
                assert (done.returncode, done.stdout.decode()) == (1, f"c: error: {error}\n")
                await served.wait_line(re.escape(f"error: {error}"))
            # The hung commands, and the child one left behind, were killed (a signal
            # takes effect a moment after it is sent).
            while sleeping(f"30.1{MARK}") or sleeping(f"30.2{MARK}"):  # noqa: ASYNC110
                await trio.sleep(0.01)
            still = await request(mesh["a"], "--topic", "lights", "fine")
            assert (still.returncode, still.stdout) == (0, b"c: lights is fine\n")


async def test_request_without_a_reply_or_with_bad_flags_exits_1(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with four_nodes(short_tmp) as mesh:
            nobody = await request(mesh["a"], "--topic", "void", "--timeout", "0.2", "x")
            assert (nobody.returncode, nobody.stdout) == (1, b"")
            assert nobody.stderr == b"p2pnode: no reply on 'void' within 0.2s\n"
            too_long = await request(mesh["a"], "--timeout", "61", "x")
            assert too_long.returncode == 1
            assert b"p2pnode: error: bad_request: a request's timeout is greater than 0 and " \
                   b"at most 60 seconds" in too_long.stderr
            none = await request(mesh["a"], "--max-replies", "0", "x")
            assert (none.returncode, none.stderr) == (
                1, b"p2pnode: error: --max-replies must be at least 1\n")
            serve = await trio.run_process(
                [*P2PNODE, "serve", "--socket", str(mesh["a"].config.socket_path)],
                capture_stderr=True, check=False, env=ENV)
            assert serve.returncode == 1
            assert b"give the command to run after --" in serve.stderr


async def test_serve_with_count_runs_commands_side_by_side(short_tmp: Path) -> None:
    # Each command waits until both have started: they finish only if they run at once.
    rendezvous = (f'read x; touch "{short_tmp}/$x"; '
                  f'while [ ! -e "{short_tmp}/one" ] || [ ! -e "{short_tmp}/two" ]; '
                  'do sleep 0.01; done; echo got $x')
    with trio.fail_after(30):
        async with four_nodes(short_tmp) as mesh:
            process = await trio.lowlevel.open_process(
                [*P2PNODE, "serve", "--socket", str(mesh["c"].config.socket_path),
                 "--topic", "t", "--count", "2", "--concurrency", "2",
                 "--command-timeout", "20", "--", "sh", "-c", rendezvous],
                stderr=subprocess.PIPE, env=ENV)
            try:
                await Proc(process).wait_line("serving 't'")
                results: dict[str, bytes] = {}

                async def ask(text: str) -> None:
                    done = await request(mesh["a"], "--topic", "t", "--timeout", "20", text)
                    results[text] = done.stdout

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, "one")
                    nursery.start_soon(ask, "two")
                assert results == {"one": b"c: got one\n", "two": b"c: got two\n"}
                assert await process.wait() == 0  # --count 2: done
            finally:
                await reap(process)
