"""Last wills over real nodes (loopback TCP, real sockets) and real app processes: an
app killed with SIGKILL leaves its will, seen two hops away and kept as the topic's
retained message; an app that closes its client normally (which says bye) leaves none;
one that dies of an exception inside its ``with`` block leaves it; the node publishes
its apps' wills when it stops; and the ``will`` and ``bye`` requests are checked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2pnode.client import ApiReplyError, Client, open_client
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes
from .test_cli import Proc, reap
from .test_examples import ENV

#: An app: sets its will, says it is online (retained), then waits; ``exit``: closes its
#: client normally; ``raise``: dies of an exception inside the ``with`` block.
APP = """
import sys
from p2pnode.client import BlockingClient
name, how = sys.argv[1], sys.argv[2]
with BlockingClient(timeout=10) as node:
    node.set_will("status/" + name, "offline", retain=True)
    node.publish("status/" + name, "online", retain=True)
    node.flush()
    print("ready", flush=True)
    if how == "wait":
        sys.stdin.read()
    elif how == "raise":
        raise RuntimeError("the app fails")
"""


@asynccontextmanager
async def line_of_three(tmp: Path, **overrides: Any) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Nodes a - b - c (a and c not linked)."""
    async with running_nodes([loopback_config(tmp, "b", **overrides)]) as (b,):
        assert b.listen_addr is not None
        peer = ("127.0.0.1", b.listen_addr[1])
        async with running_nodes([loopback_config(tmp, "a", peers=(peer,), **overrides),
                                  loopback_config(tmp, "c", peers=(peer,), **overrides)]) \
                as (a, c):
            await b.wait_peer_count(2, 2)
            yield a, b, c


async def start_app(node: Node, name: str, how: str) -> trio.Process:
    env = {**ENV, "P2PNODE_SOCKET": str(node.config.socket_path)}
    process: trio.Process = await trio.lowlevel.open_process(
        [sys.executable, "-c", APP, name, how], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await Proc(process, process.stdout).wait_line("^ready$")
    return process


class Watcher:
    """The payloads a client receives, by topic, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.got: dict[str, list[str]] = {}

    async def next_on(self, topic: str) -> str:
        """The next payload on ``topic`` (other topics' events are kept for later)."""
        while not self.got.get(topic):
            event = await self.client.next_event()
            self.got.setdefault(event["topic"], []).append(str(event["data"]))
        return self.got[topic].pop(0)


async def test_a_killed_app_leaves_its_will_and_a_closed_one_none(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with line_of_three(short_tmp) as (a, _b, c), \
                open_client(c.config.socket_path) as client:
            await client.subscribe(["status/killed", "status/closed", "status/failed"])
            watcher = Watcher(client)
            killed = await start_app(a, "killed", "wait")
            closed = await start_app(a, "closed", "exit")
            failed = await start_app(a, "failed", "raise")
            try:
                assert await watcher.next_on("status/killed") == "online"
                killed.send_signal(signal.SIGKILL)
                assert await watcher.next_on("status/killed") == "offline"
                assert await closed.wait() == 0
                assert await failed.wait() == 1
                assert await watcher.next_on("status/failed") == "online"
                assert await watcher.next_on("status/failed") == "offline"
            finally:
                for process in (killed, closed, failed):
                    await reap(process)
            # The closed app's will was not published: a later message of its node comes
            # with nothing before it (one origin's messages arrive in order).
            assert await watcher.next_on("status/closed") == "online"
            a.publish("status/closed", b"marker")
            assert await watcher.next_on("status/closed") == "marker"
            api = a.status_info().api
            assert api is not None
            assert api.wills == 2
            # The wills were retained: a late subscriber two hops away gets them.
            async with open_client(c.config.socket_path) as late:
                reply = await late.subscribe(["status/killed", "status/closed"])
                assert reply["retained"] == 2
                got = {(e := await late.next_event())["topic"]: e["data"] for _ in range(2)}
                assert got == {"status/killed": "offline", "status/closed": "online"}


async def test_the_node_publishes_its_apps_wills_when_it_stops(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with line_of_three(short_tmp) as (a, _b, c), \
                open_client(c.config.socket_path) as client:
            await client.subscribe(["status/app"])
            app = await open_client(a.config.socket_path)
            async with app:
                await app.set_will("status/app", "gone with its node")
                await a.stop()
                assert await Watcher(client).next_on("status/app") == "gone with its node"


async def test_will_and_bye_requests_are_checked(short_tmp: Path) -> None:
    with trio.fail_after(30):
        cfg = loopback_config(short_tmp, "a", retained_max_topics=1, will_max_bytes=100)
        async with running_nodes([cfg]) as (a,), \
                open_client(a.config.socket_path) as client:
            await client.subscribe([])
            watcher = Watcher(client)

            async def refused(req: dict[str, Any]) -> str:
                async with open_client(a.config.socket_path) as app:
                    try:
                        await app.request(req)
                    except ApiReplyError as err:
                        return err.code
                raise AssertionError(f"{req} was taken")

            assert await refused({"op": "will", "topic": "", "data": "x"}) == "bad_request"
            assert await refused({"op": "will", "topic": "$mesh", "data": "x"}) == "bad_request"
            assert await refused({"op": "will", "topic": "t"}) == "bad_request"  # no data
            assert await refused({"op": "will", "data": "x"}) == "bad_request"  # no topic
            assert await refused({"op": "will", "topic": "t", "data": "x" * 101}) == "too_large"
            assert await refused({"op": "will", "topic": "t", "to": "x"}) == "bad_request"
            assert await refused({"op": "bye", "x": 1}) == "bad_request"
            a.publish("full", b"x", retain=True)  # the one topic this node keeps
            await trio.testing.wait_all_tasks_blocked()
            assert await refused({"op": "will", "topic": "t", "data": "x",
                                  "retain": True}) == "retained_full"
            assert await refused({"op": "publish", "topic": "t", "data": "x",
                                  "retain": True}) == "retained_full"
            assert await refused({"op": "publish", "topic": "full", "data": "x", "retain": True,
                                  "to": a.node_hex}) == "bad_request"

            # A will replaced, then cleared: nothing published; replaced: the last one.
            stream = await trio.open_unix_socket(str(a.config.socket_path))
            async with stream:
                await stream.send_all(b'{"op":"will","topic":"w","data":"first"}\n'
                                      b'{"op":"will","topic":"w","data":"second"}\n')
            assert await watcher.next_on("w") == "second"
            stream = await trio.open_unix_socket(str(a.config.socket_path))
            async with stream:
                await stream.send_all(b'{"op":"will","topic":"w","data":"third"}\n'
                                      b'{"op":"will"}\n'
                                      b'{"op":"bye","id":1}\n'
                                      b'{"op":"publish","topic":"w","data":"after bye"}\n')
                received = b""
                while data := await stream.receive_some(4096):  # the node hangs up
                    received += data
            assert received == b'{"ok":true}\n{"ok":true}\n{"id":1,"ok":true}\n'
            a.publish("w", b"marker")
            assert await watcher.next_on("w") == "marker"  # no will, nothing after bye
