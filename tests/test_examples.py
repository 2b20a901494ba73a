"""The programs in examples/, each run against two real nodes linked on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from p2pnode.node import Node

from .conftest import loopback_config, running_nodes
from .test_cli import Proc, reap

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: `p2pnode` on PATH for the shell examples: the one installed next to this Python.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "PYTHONUNBUFFERED": "1"}


@asynccontextmanager
async def two_nodes(tmp: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes a and b, b linked to a by a static peer."""
    async with running_nodes([loopback_config(tmp, "a")]) as (a,):
        assert a.listen_addr is not None
        peer = ("127.0.0.1", a.listen_addr[1])
        async with running_nodes([loopback_config(tmp, "b", peers=(peer,))]) as (b,):
            await b.wait_peer_count(1, 1)
            yield a, b


async def start(argv: list[str], node: Node, **kwargs: object) -> trio.Process:
    env = {**ENV, "P2PNODE_SOCKET": str(node.config.socket_path)}
    return await trio.lowlevel.open_process(  # type: ignore[call-overload,no-any-return]
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


async def test_chat(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            alice = await start([sys.executable, str(EXAMPLES / "chat.py"), "--nick", "alice"],
                                a, stdin=subprocess.PIPE)
            bob = await start([sys.executable, str(EXAMPLES / "chat.py"), "--nick", "bob"],
                              b, stdin=subprocess.PIPE)
            try:
                await Proc(alice).wait_line("alice joined chat")
                await Proc(bob).wait_line("bob joined chat")
                assert alice.stdin is not None
                assert bob.stdin is not None
                await alice.stdin.send_all(b"hi there\n")
                await Proc(bob, bob.stdout).wait_line("^alice: hi there$")
                await bob.stdin.send_all(b"hello alice\n")
                await Proc(alice, alice.stdout).wait_line("^bob: hello alice$")
                for proc in (alice, bob):
                    assert proc.stdin is not None
                    await proc.stdin.aclose()
                    assert await proc.wait() == 0
            finally:
                await reap(alice)
                await reap(bob)


async def test_sensor_and_collector(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            collector = await start([sys.executable, str(EXAMPLES / "collector.py"),
                                     "--count", "3"], b)
            try:
                await Proc(collector).wait_line("collecting sensors")
                sensor = await trio.run_process(
                    [sys.executable, str(EXAMPLES / "sensor.py"), "--name", "kitchen",
                     "--count", "3", "--interval", "0", "--socket", str(a.config.socket_path)],
                    capture_stdout=True, env=ENV)
                assert sensor.stdout == b"sensor kitchen: published 3 readings\n"
                out = Proc(collector, collector.stdout)
                for seq in (1, 2, 3):
                    await out.wait_line(rf"^kitchen #{seq} load1=\d+\.\d\d( temp=[-\d.]+C)?$")
                assert await collector.wait() == 0
            finally:
                await reap(collector)


async def test_shell_relay(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            relay = await start([str(EXAMPLES / "relay.sh")], b, start_new_session=True)
            alerts = await start([sys.executable, "-m", "p2pnode.cli", "recv", "--topic",
                                  "alerts", "--count", "1"], a)
            try:
                await Proc(relay).wait_line("subscribed to logs")
                await Proc(alerts).wait_line("subscribed to alerts")
                await trio.run_process(
                    [sys.executable, "-m", "p2pnode.cli", "send", "--socket",
                     str(a.config.socket_path), "--topic", "logs"],
                    stdin=b"all good\nERROR disk full\nstill good\n")
                # topic, origin (the relay's node, b) and the text, tab-separated
                await Proc(alerts, alerts.stdout).wait_line("^alerts\tb\tERROR disk full$")
                assert await alerts.wait() == 0
            finally:
                if relay.returncode is None:
                    os.killpg(relay.pid, signal.SIGTERM)  # the pipeline we started
                await reap(relay)
                await reap(alerts)


async def test_light_and_switch(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):
            light = await start([sys.executable, str(EXAMPLES / "light.py"), "--name",
                                 "kitchen"], a)
            try:
                await Proc(light).wait_line("light kitchen serving lights/kitchen")

                async def switch(*args: str) -> subprocess.CompletedProcess[bytes]:
                    return await trio.run_process(
                        [sys.executable, str(EXAMPLES / "switch.py"), *args,
                         "--socket", str(b.config.socket_path)],
                        capture_stdout=True, capture_stderr=True, check=False, env=ENV)

                done = await switch("kitchen", "on")
                assert (done.returncode, done.stdout) == (0, b"kitchen light is on (node a)\n")
                done = await switch("kitchen", "toggle")
                assert done.stdout == b"kitchen light is off (node a)\n"
                done = await switch("kitchen", "dim")
                assert done.returncode == 1
                assert done.stderr == (b"error from node a: unknown command 'dim': say on, off,"
                                       b" toggle or status\n")
                done = await switch("garage", "on", "--timeout", "0.3")
                assert (done.returncode, done.stderr) == (
                    1, b"no light 'garage' answered within 0.3s\n")
            finally:
                await reap(light)
