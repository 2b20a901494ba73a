"""Durable subscriptions against real nodes, over the API's Unix socket: resume after
the last ack, cumulative acks, the window, delete, the gap event, a node restart and a
subscriber killed mid-stream (docs/store.md, "Durable subscriptions")."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api.durables import DurableFeed
from p2pnode.client import BlockingClient, open_asyncio_client, open_client
from p2pnode.node import Node
from p2pnode.store.selecting import decode_row
from p2pnode.wire.messages import Item

from .conftest import loopback_config, running_nodes
from .test_api_server import LineConn
from .test_cli import P2PNODE, Proc, reap
from .test_client_pipeline import two_nodes


class Conn(LineConn):
    """A raw API connection that keeps events and replies apart."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self.events: list[dict[str, Any]] = []

    async def send(self, obj: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(obj).encode() + b"\n")

    async def reply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send ``obj``; its reply (events that come first are kept)."""
        await self.send(obj)
        while True:
            line = await self.line()
            if "event" not in line:
                return line
            self.events.append(line)

    async def event(self) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        while True:
            line = await self.line()
            assert "event" in line, line
            return line

    async def messages(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            event = await self.event()
            assert event["event"] == "message", event
            out.append(event)
        return out


@asynccontextmanager
async def connect(node: Node) -> AsyncIterator[Conn]:
    conn = Conn(await trio.open_unix_socket(str(node.config.socket_path)))
    try:
        yield conn
    finally:
        await conn.stream.aclose()


def config(tmp: Path, **overrides: Any) -> Any:
    return loopback_config(tmp, "a", **overrides)


async def publish(node: Node, texts: list[str], topic: str = "t") -> None:
    """Publish ``texts`` through the API and wait until the store holds them."""
    async with connect(node) as conn:
        for text in texts:
            assert (await conn.reply({"op": "publish", "topic": topic, "data": text}))["ok"]
    await stored(node)


async def stored(node: Node) -> None:
    """Wait until every batch the node kept so far is in the store."""
    node.flush()
    service = node.storing.service
    assert service is not None
    await service.wait_stored(service.queued)


def feed(node: Node, name: str) -> DurableFeed:
    assert node.api is not None
    found = node.api.durables.active[name]
    assert found is not None
    return found


async def paused(node: Node, name: str) -> None:
    """Wait (polling, with the caller's deadline) until ``name``'s feed has delivered a
    full window and waits for acks."""
    while True:
        fed = node.api.durables.active.get(name) if node.api is not None else None
        if fed is not None and len(fed.sent) >= fed.window:
            return
        await trio.sleep(0.005)


async def ack(conn: Conn, name: str, event: dict[str, Any]) -> dict[str, Any]:
    reply = await conn.reply({"op": "ack", "durable": name, "msg_id": event["msg_id"]})
    assert reply["ok"], reply
    return reply


def decoded_items(frame: bytes) -> list[Item]:
    decoded = decode_row(frame)
    assert decoded is not None
    return decoded[1].items


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"] for e in events]


async def test_resume_after_disconnect_gets_everything_after_the_last_ack(
        short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp)]) as (node,):
            async with connect(node) as conn:
                reply = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "d1"})
                assert reply == {"ok": True, "durable": "d1", "created": True,
                                 "max_unacked": 1000}
                await publish(node, [f"m{i}" for i in range(10)])
                got = await conn.messages(10)
                assert texts(got) == [f"m{i}" for i in range(10)]
                assert {e["durable"] for e in got} == {"d1"}
                assert {e["topic"] for e in got} == {"t"}
                # Cumulative: acking the 4th confirms the first four.
                assert (await ack(conn, "d1", got[3]))["unacked"] == 6
                assert (await ack(conn, "d1", got[1]))["unacked"] == 6  # already: no-op
            await publish(node, ["m10", "m11"])
            async with connect(node) as conn:
                reply = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "d1"})
                assert reply["created"] is False
                again = await conn.messages(8)
                assert texts(again) == [f"m{i}" for i in range(4, 12)]
                assert [e["msg_id"] for e in again[:6]] == [e["msg_id"] for e in got[4:]]
                await ack(conn, "d1", again[-1])
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "d1"})
                await publish(node, ["m12"])
                assert texts(await conn.messages(1)) == ["m12"]


async def test_a_durable_is_free_once_bye_is_answered(short_tmp: Path) -> None:
    """An app that closes its client (``bye``) and at once resumes its durable from a
    new connection (docs/api.md's example) is not told it is busy: the node frees it
    before it answers the bye, not when it notices the connection's end later."""
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp)]) as (node,):
            async with connect(node) as other, connect(node) as conn:
                await other.reply({"op": "status", "id": 0})  # its session is up
                assert (await conn.reply({"op": "subscribe", "topics": ["t"],
                                          "durable": "d1"}))["ok"]
                assert (await conn.reply({"op": "bye", "id": 1}))["ok"]
                reply = await other.reply({"op": "subscribe", "topics": ["t"],
                                           "durable": "d1"})
                assert reply["ok"], reply
                assert reply["created"] is False


async def test_only_its_topics_and_acks_within_a_batch(short_tmp: Path) -> None:
    """Messages of other topics are not delivered; an ack in the middle of a stored
    batch (one ``flush`` signs several messages together) resumes inside it."""
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp)]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["s/+"], "durable": "p"})
                lines = b"".join(json.dumps({"op": "publish", "topic": topic, "data": data,
                                             "ack": False}).encode() + b"\n"
                                 for topic, data in [("s/a", "1"), ("x", "no"), ("s/b", "2"),
                                                     ("s/c/d", "no"), ("s/c", "3")])
                await conn.send_raw(lines)  # one read: one batch
                await stored(node)
                got = await conn.messages(3)
                assert texts(got) == ["1", "2", "3"]
                await ack(conn, "p", got[0])
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["s/+"], "durable": "p"})
                assert texts(await conn.messages(2)) == ["2", "3"]
            service = node.storing.service
            assert service is not None
            rows = await service.call(service.store.after, 0, 100)
            assert 5 in [row.count for row in rows]  # one batch held all five


async def test_the_window_pauses_delivery_until_acks_come(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp, durable_max_unacked=50)]) as (node,):
            async with connect(node) as conn:
                reply = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "w",
                                          "max_unacked": 3})
                assert reply["max_unacked"] == 3
                await publish(node, [f"m{i}" for i in range(10)])
                got = await conn.messages(3)
                await paused(node, "w")
                # Nothing more comes while three are outstanding.
                assert (await conn.reply({"op": "sync"}))["ok"]
                assert conn.events == []
                assert len(feed(node, "w").sent) == 3
                await ack(conn, "w", got[1])  # room for two more
                more = await conn.messages(2)
                assert texts(got + more) == [f"m{i}" for i in range(5)]
                await paused(node, "w")
                assert (await conn.reply({"op": "sync"}))["ok"]
                assert conn.events == []
                await ack(conn, "w", more[-1])
                assert texts(await conn.messages(3)) == ["m5", "m6", "m7"]
                bad = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "w2",
                                        "max_unacked": 51})
                assert bad["error"]["code"] == "bad_request"
                assert "at most 50" in bad["error"]["message"]


async def test_unsubscribe_keeps_the_position_and_delete_removes_it(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp)]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "k"})
                await publish(node, ["a", "b"])
                got = await conn.messages(2)
                await ack(conn, "k", got[0])
                assert (await conn.reply({"op": "unsubscribe", "durable": "k"}))["ok"]
                await publish(node, ["c"])
                assert (await conn.reply({"op": "sync"}))["ok"]
                assert conn.events == []  # stopped
                late = await conn.reply({"op": "ack", "durable": "k", "msg_id": got[1]["msg_id"]})
                assert late["error"]["code"] == "unknown_durable"
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "k"})
                assert texts(await conn.messages(2)) == ["b", "c"]
                reply = await conn.reply({"op": "unsubscribe", "durable": "k", "delete": True})
                assert reply == {"ok": True, "deleted": True}
                service = node.storing.service
                assert service is not None
                assert await service.call(service.store.durable, "k") is None
                await publish(node, ["d"])
                reply = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "k"})
                assert reply["created"] is True  # afresh: from now on
                await publish(node, ["e"])
                assert texts(await conn.messages(1)) == ["e"]
                gone = await conn.reply({"op": "unsubscribe", "durable": "nope", "delete": True})
                assert gone["error"]["code"] == "unknown_durable"


async def test_a_durable_past_retention_gets_a_gap_event(short_tmp: Path) -> None:
    with trio.fail_after(30):
        cfg = config(short_tmp, store_bytes=6000)
        async with running_nodes([cfg]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "g"})
            # About 400 bytes stored per message: the store keeps the last 15 or so.
            sent = [f"m{i}-" + "x" * 150 for i in range(60)]
            await publish(node, sent)
            await publish(node, ["other"] * 10, topic="u")  # not its topic: not its loss
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "g"})
                gap = await conn.event()
                assert gap["event"] == "gap"
                assert gap["durable"] == "g"
                lost = gap["lost"]
                assert 0 < lost < 60
                got = await conn.messages(60 - lost)
                assert texts(got) == sent[lost:]  # what is left, in order
                assert (await conn.reply({"op": "sync"}))["ok"]
                assert conn.events == []


async def test_a_connected_durable_that_falls_behind_gets_a_gap_event(
        short_tmp: Path) -> None:
    """Its window full, the subscriber stops acking while much more is stored than
    the store keeps: once it acks, its feed finds the messages gone and says so."""
    with trio.fail_after(30):
        async with running_nodes([config(short_tmp, store_bytes=6000)]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "g",
                                  "max_unacked": 1})
                sent = [f"m{i}-" + "x" * 150 for i in range(60)]
                await publish(node, sent)
                first = await conn.event()
                assert first["data"] == sent[0]
                await ack(conn, "g", first)
                gap = await conn.event()
                assert gap["event"] == "gap", gap
                lost = gap["lost"]
                assert 1 < lost < 59
                # Lost: after its last ack, m0 too (delivered, not acked when it went).
                rest = []
                while len(rest) < 60 - lost:
                    rest.append(await conn.event())
                    await ack(conn, "g", rest[-1])
                assert texts(rest) == sent[lost:]
                assert feed(node, "g").lost == lost


async def test_the_position_survives_a_node_restart_and_a_killed_subscriber(
        short_tmp: Path) -> None:
    """A subscriber acks as it goes and is killed mid-stream; the node restarts (same
    store file); the subscriber resumes: everything after its last ack, in order,
    nothing it acked."""
    cfg = config(short_tmp)
    sent = [f"m{i}" for i in range(300)]
    acked: list[str] = []
    with trio.fail_after(40):
        async with running_nodes([cfg]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "r"})
                await publish(node, sent[:200])
                got = await conn.messages(120)
                for event in got[:100]:
                    await conn.send({"op": "ack", "durable": "r", "msg_id": event["msg_id"]})
                    acked.append(event["data"])
                await conn.reply({"op": "sync"})  # the acks were taken
                # Killed: the connection ends with 100 unread events on the way.
        async with running_nodes([cfg]) as (node,):
            await publish(node, sent[200:])
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "r"})
                got = await conn.messages(200)
                assert texts(got) == sent[100:]
                await ack(conn, "r", got[9])
            # The subscriber goes again (the ack not written yet when it comes back).
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "r"})
                assert texts(await conn.messages(190)) == sent[110:]
    assert acked == sent[:100]


async def test_messages_from_other_nodes_and_direct_ones(short_tmp: Path) -> None:
    """A durable subscription on b gets what a publishes, and the direct messages to
    b, but not b's direct messages to a (b stores them: it published them)."""
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):
            async with connect(b) as conn:
                await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "x"})
                got: list[dict[str, Any]] = []
                async with connect(a) as pub_a, connect(b) as pub_b:
                    for pub, fields in [(pub_a, {"data": "1"}),
                                        (pub_b, {"data": "no", "to": a.node_hex}),
                                        (pub_a, {"data": "2", "to": b.node_hex}),
                                        (pub_b, {"data": "3"})]:
                        reply = await pub.reply({"op": "publish", "topic": "t", **fields})
                        assert reply["ok"], reply
                        if pub is pub_a:  # in order: once b has it
                            got += await conn.messages(1)
                got += await conn.messages(1)
                assert texts(got) == ["1", "2", "3"]
                assert [e["hops"] for e in got] == [1, 1, 0]
                assert got[1]["to"] == b.node_hex


async def test_durable_requests_are_checked(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp, max_durables=2)]) as (node,):
            async with connect(node) as conn, connect(node) as other:
                cases = [
                    ({"durable": ""}, "bad_request", "1-64 characters"),
                    ({"durable": "a/b"}, "bad_request", "1-64 characters"),
                    ({"durable": "x" * 65}, "bad_request", "1-64 characters"),
                    ({"durable": "d", "since": 0}, "bad_request", "since"),
                    ({"durable": "d", "seen": ["00" * 16]}, "bad_request", "seen"),
                    ({"durable": "d", "topics": ["a/#/b"]}, "bad_request", "'#'"),
                ]
                for fields, code, text in cases:
                    req = {"op": "subscribe", "topics": ["t"], "id": 7, **fields}
                    reply = await conn.reply(req)
                    assert reply["error"]["code"] == code, (fields, reply)
                    assert text in reply["error"]["message"]
                    assert reply["id"] == 7
                ok = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "d"})
                assert ok["ok"]
                for who in (conn, other):
                    busy = await who.reply({"op": "subscribe", "topics": ["t"], "durable": "d"})
                    assert busy["error"]["code"] == "durable_busy"
                busy = await other.reply({"op": "unsubscribe", "durable": "d", "delete": True})
                assert busy["error"]["code"] == "durable_busy"
                for msg_id, code in [("zz", "bad_request"), ("00" * 16, "bad_request")]:
                    reply = await conn.reply({"op": "ack", "durable": "d", "msg_id": msg_id})
                    assert reply["error"]["code"] == code
                reply = await other.reply({"op": "ack", "durable": "d", "msg_id": "00" * 16})
                assert reply["error"]["code"] == "unknown_durable"
                assert (await other.reply({"op": "subscribe", "topics": [],
                                           "durable": "e"}))["ok"]
                full = await other.reply({"op": "subscribe", "topics": [], "durable": "f"})
                assert full["error"]["code"] == "too_many_durables"
                missing = await other.reply({"op": "unsubscribe"})
                assert missing["error"]["code"] == "bad_request"


async def test_durable_needs_the_store(short_tmp: Path) -> None:
    with trio.fail_after(10):
        async with running_nodes([config(short_tmp, store="none")]) as (node,):
            async with connect(node) as conn:
                reply = await conn.reply({"op": "subscribe", "topics": ["t"], "durable": "d"})
                assert reply["error"]["code"] == "store_off"
                assert "--store none" in reply["error"]["message"]


@pytest.mark.parametrize("topics", [[], ["#"]])
async def test_all_topics_leave_out_the_nodes_own(short_tmp: Path, topics: list[str]) -> None:
    with trio.fail_after(20):
        async with running_nodes([config(short_tmp)]) as (node,):
            async with connect(node) as conn:
                await conn.reply({"op": "subscribe", "topics": topics, "durable": "all"})
                start = feed(node, "all").read_pos
                # The node's own message, on $mesh (a list without links is not
                # published: it names a peer here)
                node.announcer.live_links = lambda: [bytes(16)]
                node.announcer.announce()
                await stored(node)
                service = node.storing.service
                assert service is not None
                rows = await service.call(service.store.after, start, 100)
                assert any(item.topic.startswith("$") for row in rows
                           for item in decoded_items(row.frame))
                await publish(node, ["a"], topic="x")
                await publish(node, ["b"], topic="y/z")
                got = await conn.messages(2)
                assert [(e["topic"], e["data"]) for e in got] == [("x", "a"), ("y/z", "b")]


async def recv_durable(node: Node, count: int, then: list[str] | None = None) -> list[str]:
    """Run ``p2pnode recv --durable cli --data --count N``; once it subscribed, publish
    ``then``; return the lines it printed (it exits after ``count``)."""
    proc = await trio.lowlevel.open_process(
        [*P2PNODE, "recv", "--socket", str(node.config.socket_path), "--topic", "t",
         "--durable", "cli", "--data", "--count", str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await Proc(proc).wait_line("durable subscription cli (created|resumed): t")
        if then:
            await publish(node, then)
        assert proc.stdout is not None
        out = b""
        while chunk := await proc.stdout.receive_some(65536):
            out += chunk
        assert await proc.wait() == 0
    finally:
        await reap(proc)
    return out.decode().splitlines()


async def test_cli_recv_durable_acks_what_it_printed(short_tmp: Path) -> None:
    with trio.fail_after(60):
        async with running_nodes([config(short_tmp)]) as (node,):
            assert await recv_durable(node, 3, [f"m{i}" for i in range(5)]) == [
                "m0", "m1", "m2"]
            assert await recv_durable(node, 2) == ["m3", "m4"]  # acked: not again
            assert await recv_durable(node, 1, ["m5"]) == ["m5"]


async def test_the_three_clients_subscribe_durably_and_ack(short_tmp: Path) -> None:
    """trio, asyncio and blocking: ``subscribe(durable=...)``, ``ack(event)``,
    ``unsubscribe(durable=..., delete=True)``; each resumes after its own ack."""
    with trio.fail_after(60):
        async with running_nodes([config(short_tmp)]) as (node,):
            path = node.config.socket_path
            async with connect(node) as conn:
                for kind in KINDS:
                    await conn.reply({"op": "subscribe", "topics": ["t"], "durable": kind})
                    await conn.reply({"op": "unsubscribe", "durable": kind})
            await publish(node, ["x", "y", "z"])
            for kind in KINDS:
                # Resumed: the three, the second acked; then the third again, deleted.
                assert await KINDS[kind](path, kind, 3, False) == (False, ["x", "y", "z"])
                assert await KINDS[kind](path, kind, 1, True) == (False, ["z"])
                assert (await KINDS[kind](path, kind, 0, False))[0] is True


async def steps(client: Any, name: str, n: int, delete: bool) -> tuple[bool, list[str]]:
    """One round with an async client (trio's or asyncio's: the same methods)."""
    reply = await client.subscribe(["t"], durable=name, max_unacked=10)
    events = [await client.next_event() for _ in range(n)]
    if events:
        await client.ack(events[min(1, n - 1)])
    if delete:
        await client.unsubscribe(durable=name, delete=True)
    return reply["created"], [e["data"] for e in events]


async def trio_round(path: Path, name: str, n: int, delete: bool) -> tuple[bool, list[str]]:
    async with open_client(path) as client:
        return await steps(client, name, n, delete)


async def asyncio_round(path: Path, name: str, n: int, delete: bool) -> tuple[bool, list[str]]:
    async def app() -> tuple[bool, list[str]]:
        async with asyncio.timeout(10), open_asyncio_client(path) as client:
            return await steps(client, name, n, delete)

    return await trio.to_thread.run_sync(asyncio.run, app())


async def blocking_round(path: Path, name: str, n: int, delete: bool) -> tuple[bool, list[str]]:
    def app() -> tuple[bool, list[str]]:
        with BlockingClient(path, timeout=10) as client:
            reply = client.subscribe(["t"], durable=name, max_unacked=10)
            events = [client.next_event() for _ in range(n)]
            if events:
                client.ack(events[min(1, n - 1)])
            if delete:
                client.unsubscribe(durable=name, delete=True)
            return reply["created"], [e["data"] for e in events]

    return await trio.to_thread.run_sync(app)


KINDS = {"trio": trio_round, "asyncio": asyncio_round, "blocking": blocking_round}
