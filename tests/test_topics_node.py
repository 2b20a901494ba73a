"""Wildcard subscriptions over real nodes (loopback TCP, real Unix sockets): subscribers
with patterns on a line of four nodes get exactly the matching messages, once each,
with their concrete topics; a replay with ``since`` matches patterns too; unsubscribe
takes the same pattern string; bad topics and patterns get clear errors; the three
clients and ``p2pnode recv`` take patterns as they are."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api import topic_matches
from p2pnode.client import (
    ApiReplyError,
    BlockingClient,
    Client,
    open_asyncio_client,
    open_client,
)
from p2pnode.node import Node
from p2pnode.testing import line_edges, wait_linked

from .conftest import loopback_config, running_nodes
from .test_api_server import LineConn
from .test_cli import P2PNODE, Proc, reap
from .test_client_asyncio import in_asyncio

TOPICS = [
    "sensors/kitchen/temperature", "sensors/hall/temperature", "sensors//temperature",
    "sensors/kitchen/humidity", "sensors", "sensors/a/b/temperature", "other/kitchen/x",
    "other", "kitchen",
]
END = "end"  # each subscriber also takes END: after an origin's END, all of it came


@asynccontextmanager
async def line_of_nodes(tmp: Path, n: int) -> AsyncIterator[list[Node]]:
    """``n`` nodes linked in a line over loopback TCP (0-1, 1-2, ...)."""
    edges = line_edges(n)
    async with running_nodes([loopback_config(tmp, f"n{i}") for i in range(n)]) as nodes:
        async with trio.open_nursery() as dialers:
            for a, b in edges:
                host, port = nodes[b].listen_addr  # type: ignore[misc]
                assert nodes[a].links is not None
                dialers.start_soon(nodes[a].links.keep_dialling, host, port)
            await wait_linked(nodes, edges)
            yield nodes
            dialers.cancel_scope.cancel()


async def events_until_ends(client: Client, ends: int) -> list[dict[str, Any]]:
    """The events of ``client`` up to its ``ends``-th END message (those excluded)."""
    got: list[dict[str, Any]] = []
    while ends:
        event = await client.next_event()
        if event["topic"] == END:
            ends -= 1
        else:
            got.append(event)
    return got


async def test_subscribers_with_patterns_get_exactly_the_matching_messages_once(
    short_tmp: Path,
) -> None:
    subscriptions = {  # node -> the patterns of its subscriber
        3: ["sensors/+/temperature"],
        2: ["sensors/#"],
        1: ["sensors/kitchen/temperature", "sensors/+/temperature", "sensors/#",
            "+/kitchen/+", "#"],  # overlapping: still once each
        0: ["sensors", "+"],
    }
    with trio.fail_after(30):
        async with line_of_nodes(short_tmp, 4) as nodes:
            subs = {i: await open_client(nodes[i].config.socket_path) for i in subscriptions}
            for i, patterns in subscriptions.items():
                await subs[i].subscribe([*patterns, END])
            publishers = (0, 3)  # both ends of the line: every message crosses it
            for i in publishers:
                async with await open_client(nodes[i].config.socket_path) as pub:
                    for topic in TOPICS:
                        await pub.publish(topic, f"{topic} from n{i}")
                    await pub.publish(END, "")
            got = {i: await events_until_ends(subs[i], len(publishers)) for i in subs}
            for i, patterns in subscriptions.items():
                expected = Counter(f"{t} from n{p}" for p in publishers for t in TOPICS
                                   if any(topic_matches(pat, t) for pat in patterns))
                assert Counter(e["data"] for e in got[i]) == expected, f"n{i}"
                # Events carry the concrete topic the message was published to.
                assert all(e["data"].startswith(e["topic"] + " from ") for e in got[i])
            # Spelled out for two of them: '+' takes one level, '#' the parent level too.
            assert Counter(e["topic"] for e in got[0]) == {"sensors": 2, "other": 2,
                                                           "kitchen": 2}
            assert len(got[2]) == 2 * 6  # the six sensors topics, "sensors" included
            # A late app replays history with patterns: the matching messages only.
            async with await open_client(nodes[2].config.socket_path) as late:
                reply = await late.subscribe(["+/kitchen/#", "other"], since=0)
                replayed = [await late.next_event() for _ in range(reply["replayed"])]
            assert all(e["replay"] for e in replayed)
            assert sorted(e["data"] for e in replayed) == sorted(
                f"{t} from n{p}" for p in publishers
                for t in ("sensors/kitchen/temperature", "sensors/kitchen/humidity",
                          "other/kitchen/x", "other"))
            for client in subs.values():
                await client.aclose()


async def next_data(client: Client) -> str:
    return str((await client.next_event())["data"])


@pytest.fixture
async def node(short_tmp: Path) -> AsyncIterator[Node]:
    async with running_nodes([loopback_config(short_tmp, "a")]) as (n,):
        yield n


async def test_unsubscribe_takes_the_same_pattern(node: Node) -> None:
    with trio.fail_after(10):
        async with await open_client(node.config.socket_path) as client:
            await client.subscribe(["a/+", "a/b", "mark"])

            async def publish(*topics: str) -> None:
                for topic in topics:
                    await client.publish(topic, topic, wait=True)

            await publish("a/b", "a/c", "mark")
            assert [await next_data(client) for _ in range(3)] == ["a/b", "a/c", "mark"]
            await client.unsubscribe(["a/+"])
            await publish("a/b", "a/c", "mark")  # a/c no longer; a/b by its name
            assert [await next_data(client) for _ in range(2)] == ["a/b", "mark"]
            await client.unsubscribe(["a/b", "a/#"])  # a/# was never subscribed: no harm
            await client.subscribe(["a/#"])
            await publish("a", "a/b/c", "b/a", "mark")
            assert [await next_data(client) for _ in range(3)] == ["a", "a/b/c", "mark"]
            await client.unsubscribe([])  # everything, patterns too
            await client.subscribe(["mark"])
            await publish("a/b", "mark")
            assert await next_data(client) == "mark"
            assert node.api is not None
            assert len(node.api._subs.patterns) == 0


@pytest.mark.parametrize(("request_", "says"), [
    ({"op": "publish", "topic": "sensors/+/temperature", "data": "x"}, "may not contain '+'"),
    ({"op": "publish", "topic": "sensors/#", "data": "x"}, "may not contain '#'"),
    ({"op": "subscribe", "topics": ["ok", "a/#/b"]}, "'#' must be the last level"),
    ({"op": "subscribe", "topics": ["a/b#"]}, "'#' must be alone in its level"),
    ({"op": "subscribe", "topics": ["a+/b"]}, "'+' must be alone in its level"),
    ({"op": "unsubscribe", "topics": ["#/x"]}, "'#' must be the last level"),
])
async def test_bad_topics_and_patterns_get_clear_errors(
    node: Node, request_: dict[str, Any], says: str,
) -> None:
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        reply = await conn.ask({**request_, "id": 9})
        assert reply["ok"] is False
        assert (reply["id"], reply["error"]["code"]) == (9, "bad_request")
        assert says in reply["error"]["message"]
        # Nothing of a refused subscribe was taken, and the connection still works.
        assert (await conn.ask({"op": "subscribe", "topics": ["ok"], "id": 1}))["ok"]
        await conn.send_raw(b'{"op":"publish","topic":"ok","data":"fine","id":2}\n')
        lines = [await conn.line(), await conn.line()]
        assert {line.get("event", "reply") for line in lines} == {"message", "reply"}
        await conn.stream.aclose()


async def test_patterns_count_towards_the_limit_per_client(node: Node) -> None:
    with trio.fail_after(20):
        async with await open_client(node.config.socket_path) as client:
            for k in range(4):
                await client.subscribe([f"p{k}/{j}/+" for j in range(1024)])
            with pytest.raises(ApiReplyError, match="at most 4096 topics per client"):
                await client.subscribe(["one/more/#"])
            await client.unsubscribe([f"p0/{j}/+" for j in range(1024)])
            await client.subscribe(["one/more/#"])


async def test_the_three_clients_subscribe_to_patterns(node: Node) -> None:
    path = node.config.socket_path
    with trio.fail_after(20):
        async with await open_client(path) as pub:

            async def publish_all() -> None:
                for topic in ("s/x/t", "s/x/h", "s/t", "s/y/t", "done/x"):
                    await pub.publish(topic, topic)
                await pub.flush()

            async with await open_client(path) as sub:  # trio
                await sub.subscribe(["s/+/t", "done/#"])
                await publish_all()
                assert [await next_data(sub) for _ in range(3)] == ["s/x/t", "s/y/t", "done/x"]

            async def asyncio_app() -> list[str]:
                async with open_asyncio_client(path) as client:
                    await client.subscribe(["s/+/t", "done/#"])
                    trio.from_thread.run(publish_all)
                    return [str((await client.next_event())["data"]) for _ in range(3)]

            assert await in_asyncio(asyncio_app) == ["s/x/t", "s/y/t", "done/x"]

            def blocking_app() -> list[str]:
                with BlockingClient(path, timeout=10) as client:
                    client.subscribe(["s/+/t", "done/#"])
                    trio.from_thread.run(publish_all)
                    return [str(client.next_event()["data"]) for _ in range(3)]

            assert await trio.to_thread.run_sync(blocking_app) == ["s/x/t", "s/y/t", "done/x"]


async def test_recv_takes_a_pattern_and_send_refuses_one(node: Node) -> None:
    path = str(node.config.socket_path)
    with trio.fail_after(30):
        recv = await trio.lowlevel.open_process(
            [*P2PNODE, "recv", "--socket", path, "--topic", "sensors/+/temperature",
             "--count", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            await Proc(recv).wait_line(r"subscribed to sensors/\+/temperature")
            async with await open_client(path) as pub:
                for topic in ("sensors/hall/humidity", "sensors/hall/temperature",
                              "sensors/temperature", "sensors/attic/temperature"):
                    await pub.publish(topic, topic)
            assert recv.stdout is not None
            out = b""
            while out.count(b"\n") < 2:
                chunk = await recv.stdout.receive_some(65536)
                assert chunk, "recv ended early"
                out += chunk
            assert await recv.wait() == 0
        finally:
            await reap(recv)
        events = [json.loads(line) for line in out.decode().splitlines()]
        assert [e["topic"] for e in events] == ["sensors/hall/temperature",
                                                 "sensors/attic/temperature"]
        sent = await trio.run_process(
            [*P2PNODE, "send", "--socket", path, "--topic", "sensors/+/x", "hi"],
            capture_stdout=True, capture_stderr=True, check=False)
        assert sent.returncode == 1
        assert b"may not contain '+'" in sent.stderr
