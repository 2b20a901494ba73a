"""examples/presence.py against two real nodes linked on loopback: a watcher sees apps
come online, go offline by their last will when killed, or by saying so when they end;
a watcher that starts later gets the current states first (retained)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from .test_cli import Proc, reap
from .test_examples import EXAMPLES, start, two_nodes

PRESENCE = [sys.executable, str(EXAMPLES / "presence.py")]


async def test_presence(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):
            watcher = await start([*PRESENCE, "--watch", "--count", "4"], b)
            kitchen = garage = late = None
            try:
                await Proc(watcher).wait_line(r"watching presence \(0 states known\)")
                seen = Proc(watcher, watcher.stdout)
                kitchen = await start([*PRESENCE, "--name", "kitchen"], a,
                                      stdin=subprocess.PIPE)
                await Proc(kitchen).wait_line("kitchen is online")
                await seen.wait_line("^kitchen: online$")
                kitchen.send_signal(signal.SIGKILL)  # its node publishes its will
                await seen.wait_line("^kitchen: offline$")
                garage = await start([*PRESENCE, "--name", "garage"], a, stdin=subprocess.PIPE)
                await Proc(garage).wait_line("garage is online")
                await seen.wait_line("^garage: online$")
                assert garage.stdin is not None
                await garage.stdin.aclose()  # ends normally: says offline itself
                assert await garage.wait() == 0
                await seen.wait_line("^garage: offline$")
                assert await watcher.wait() == 0
                assert seen.seen == ["kitchen: online", "kitchen: offline", "garage: online",
                                     "garage: offline"]
                late = await start([*PRESENCE, "--watch", "--count", "2"], b)
                await Proc(late).wait_line(r"watching presence \(2 states known\)")
                assert await late.wait() == 0
                assert late.stdout is not None
                lines = (await late.stdout.receive_some(4096)).decode().splitlines()
                assert sorted(lines) == ["garage: offline [retained]",
                                         "kitchen: offline [retained]"]
            finally:
                for process in (watcher, kitchen, garage, late):
                    if process is not None:
                        await reap(process)
