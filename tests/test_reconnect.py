"""A node that stops under its subscribers: `recv` says so and exits 1; `recv --reconnect`
and the clients' subscriptions (trio, asyncio, blocking) wait for it to come back and
go on where they were, every message once, those published meanwhile included (from
the restarted node's history, which it fetched from its peer)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.client import (
    AsyncSubscription,
    BlockingClient,
    BlockingSubscription,
    ConnectionClosed,
    PublishesLost,
    Reconnect,
    ReconnectFailed,
    open_asyncio_client,
    open_asyncio_subscription,
    open_client,
    open_subscription,
)
from p2pnode.client.resume import ResumeState
from p2pnode.config import NodeConfig
from p2pnode.node import Node

from .conftest import loopback_config
from .test_cli import P2PNODE, Proc, reap

FAST = Reconnect(initial=0.05, max_delay=0.2, give_up_after=10.0)


class Mesh:
    """Node a, and node b linked to it, which can stop and start again (same socket,
    same identity), as a restart does."""

    def __init__(self, nursery: trio.Nursery, tmp: Path) -> None:
        self.nursery, self.tmp = nursery, tmp
        self.a: Node | None = None
        self.b: Node | None = None
        self.cfg_b: NodeConfig | None = None
        self.b_done = trio.Event()

    async def start(self) -> None:
        self.a = Node(loopback_config(self.tmp, "a"))
        await self.nursery.start(self.a.run)
        assert self.a.listen_addr is not None
        self.cfg_b = loopback_config(self.tmp, "b", peers=(("127.0.0.1", self.a.listen_addr[1]),))
        await self.start_b()

    async def start_b(self) -> None:
        assert self.cfg_b is not None
        self.b = Node(self.cfg_b)
        self.b_done = trio.Event()
        await self.nursery.start(self._run_b, self.b, self.b_done)
        await self.b.wait_peer_count(1, 1)

    @staticmethod
    async def _run_b(node: Node, done: trio.Event, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await node.run(task_status=task_status)
        finally:
            done.set()

    async def stop_b(self) -> None:
        """Stop b and wait until it has let go of its data directory."""
        assert self.b is not None
        await self.b.stop()
        await self.b_done.wait()

    @property
    def sock_a(self) -> Path:
        return self.tmp / "a.sock"

    @property
    def sock_b(self) -> Path:
        return self.tmp / "b.sock"


@asynccontextmanager
async def mesh(tmp: Path) -> AsyncIterator[Mesh]:
    async with trio.open_nursery() as nursery:
        m = Mesh(nursery, tmp)
        await m.start()
        try:
            yield m
        finally:
            nursery.cancel_scope.cancel()


async def publish(sock: Path, *texts: str) -> list[str]:
    async with open_client(sock) as client:
        return [await client.publish("chat", text, wait=True) for text in texts]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["data"]) for e in events if e["event"] == "message"]


async def test_recv_says_the_node_stopped_and_exits_1(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with mesh(short_tmp) as m:
            recv = await trio.lowlevel.open_process(
                [*P2PNODE, "recv", "--socket", str(m.sock_b), "--topic", "chat"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                err = Proc(recv)
                await err.wait_line("subscribed to chat")
                await m.stop_b()
                assert await recv.wait() == 1
                await err.wait_line(rf"^p2pnode: error: node at {m.sock_b} stopped \(the node "
                                    r"closed the connection: the node is stopping\); "
                                    r"recv --reconnect waits")
                assert not any("Traceback" in line for line in err.seen)
            finally:
                await reap(recv)


async def test_recv_reconnect_gets_what_was_published_meanwhile_once(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with mesh(short_tmp) as m:
            recv = await trio.lowlevel.open_process(
                [*P2PNODE, "recv", "--socket", str(m.sock_b), "--topic", "chat", "--data",
                 "--reconnect", "--count", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                err, out = Proc(recv), Proc(recv, recv.stdout)
                await err.wait_line("subscribed to chat")
                await publish(m.sock_a, "one", "two")
                await out.wait_line("^two$")
                await m.stop_b()
                await err.wait_line(rf"^p2pnode: node at {m.sock_b} stopped \(.*\); retrying "
                                    r"every 0.1-2 s for up to 300 s$")
                await publish(m.sock_a, "three", "four")  # b is down: a keeps them
                await m.start_b()
                await err.wait_line(rf"^p2pnode: reconnected to {m.sock_b} after [\d.]+ s; ")
                # From b's new history, or live as b fetches them from a: in either order.
                await out.wait_line("^three$")
                await out.wait_line("^four$")
                await publish(m.sock_a, "five")
                await out.wait_line("^five$")
                assert await recv.wait() == 0  # --count 5: nothing printed twice
                assert out.seen[:2] == ["one", "two"]
                assert sorted(out.seen[2:4]) == ["four", "three"]
                assert out.seen[4:] == ["five"]
                assert not any("Traceback" in line for line in err.seen)
            finally:
                await reap(recv)


async def until(next_event: Callable[[], Awaitable[dict[str, Any]]], text: str,
                into: list[dict[str, Any]]) -> None:
    while True:
        event = await next_event()
        into.append(event)
        if event.get("data") == text:
            return


async def test_trio_subscription_resumes_after_a_restart(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with mesh(short_tmp) as m:
            events: list[dict[str, Any]] = []
            async with open_subscription(["chat"], None, m.sock_b, reconnect=FAST) as sub:
                assert sub.reply == {"ok": True}
                await sub.publish("chat", "one")  # through the subscription itself
                await sub.flush()
                await until(sub.next_event, "one", events)
                last = sub.state.last_id
                await m.stop_b()
                await publish(m.sock_a, "two", "three")
                assert (await sub.next_event())["event"] == "disconnected"
                with pytest.raises(ConnectionClosed, match="reconnects in next_event"):
                    await sub.publish("chat", "lost")
                await m.start_b()
                reconnected = await sub.next_event()
                assert reconnected["event"] == "reconnected"
                assert reconnected["since"] == last
                await until(sub.next_event, "three", events)
                await sub.publish("chat", "four", wait=True)
                await until(sub.next_event, "four", events)
            assert texts(events) == ["one", "two", "three", "four"]
            assert sub.state.reconnects == 1


async def test_asyncio_subscription_resumes_after_a_restart(short_tmp: Path) -> None:
    token = trio.lowlevel.current_trio_token()

    def in_trio(fn: Callable[[], Awaitable[object]]) -> None:
        trio.from_thread.run(fn, trio_token=token)  # blocks this asyncio loop meanwhile

    with trio.fail_after(30):
        async with mesh(short_tmp) as m:

            async def app() -> list[dict[str, Any]]:
                events: list[dict[str, Any]] = []
                async with open_asyncio_client(m.sock_a) as pub, \
                        open_asyncio_subscription(["chat"], None, m.sock_b,
                                                  reconnect=FAST) as sub:
                    await pub.publish("chat", "one", wait=True)
                    await until(sub.next_event, "one", events)
                    in_trio(m.stop_b)
                    await pub.publish("chat", "two", wait=True)
                    in_trio(m.start_b)
                    await until(sub.next_event, "two", events)
                    await pub.publish("chat", "three", wait=True)
                    await until(sub.next_event, "three", events)
                return events

            def run_app() -> list[dict[str, Any]]:
                async def bounded() -> list[dict[str, Any]]:
                    async with asyncio.timeout(20):
                        return await app()
                return asyncio.run(bounded())

            events = await trio.to_thread.run_sync(run_app)
    assert [e["event"] for e in events if e["event"] != "message"] == [
        "disconnected", "reconnected"]
    assert texts(events) == ["one", "two", "three"]


async def test_blocking_subscription_resumes_after_a_restart(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with mesh(short_tmp) as m:
            sub = await trio.to_thread.run_sync(
                lambda: BlockingSubscription(["chat"], None, m.sock_b, timeout=10,
                                             reconnect=FAST))
            try:
                await publish(m.sock_a, "one")
                first = await trio.to_thread.run_sync(sub.next_event)
                assert first["data"] == "one"
                await m.stop_b()
                await publish(m.sock_a, "two")
                gone = await trio.to_thread.run_sync(sub.next_event)
                assert gone["event"] == "disconnected"
                with pytest.raises(ConnectionClosed, match="nothing published"):
                    sub.publish("chat", "x")
                await m.start_b()
                back = await trio.to_thread.run_sync(sub.next_event)
                assert back["event"] == "reconnected"
                two = await trio.to_thread.run_sync(sub.next_event)
                assert two["data"] == "two"
            finally:
                await trio.to_thread.run_sync(sub.close)


class FakeConn:
    """A connection that the node ends with ``unanswered`` requests unanswered."""

    def __init__(self, unanswered: int) -> None:
        self.unacknowledged = unanswered
        self.closed = False

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def next_event(self) -> dict[str, Any]:
        raise trio.EndOfChannel("the node closed the connection before it answered "
                                f"{self.unacknowledged} publishes")

    async def publish(self, topic: str, data: str | bytes, to: str | None = None, *,
                      wait: bool = False) -> int:
        await trio.lowlevel.checkpoint()
        return 1

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True


async def test_publishes_left_unanswered_are_named_once_then_publishing_goes_on() -> None:
    conns = [FakeConn(3), FakeConn(0)]

    async def connect() -> FakeConn:
        return conns.pop(0)

    sub = AsyncSubscription(connect, trio.sleep, trio.current_time, (trio.EndOfChannel,),
                            ResumeState(["t"], None), FAST, "/s")
    with trio.fail_after(5):
        await sub.open()
        assert (await sub.next_event())["event"] == "disconnected"
        with pytest.raises(PublishesLost, match="before it answered 3 requests") as info:
            await sub.publish("t", "x")
        assert info.value.count == 3
        with pytest.raises(ConnectionClosed, match="reconnects in next_event"):
            await sub.flush()  # raised once; now: not connected
        assert (await sub.next_event())["event"] == "reconnected"
        assert await sub.publish("t", "y") == 1  # on the new connection
        await sub.aclose()


async def test_a_subscription_gives_up_when_the_node_stays_away(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with mesh(short_tmp) as m:
            policy = Reconnect(initial=0.05, max_delay=0.1, give_up_after=0.5)
            async with open_subscription(["chat"], None, m.sock_b, reconnect=policy) as sub:
                await m.stop_b()
                assert (await sub.next_event())["event"] == "disconnected"
                with pytest.raises(ReconnectFailed, match=r"no node at .*b\.sock for 0\.5 s "
                                                          r"\(\d+ attempts\): gave up"):
                    await sub.next_event()


def test_resume_state_hands_out_each_message_once_and_resubscribes_from_it() -> None:
    state = ResumeState(["chat"], None, max_ids=2)
    first = state.request()
    assert first == {"op": "subscribe", "topics": ["chat"]}
    assert state.started is not None
    # Nothing seen yet: the restarted node's history since the first subscription.
    assert state.request()["since"] == state.started
    for n in (1, 2, 1, 3):
        state.accept({"event": "message", "msg_id": f"{n:032x}"})
    assert state.duplicates == 1
    assert state.last_id == f"{3:032x}"
    assert state.request()["since"] == f"{3:032x}"
    assert state.accept({"event": "dropped", "count": 1})
    assert state.accept({"event": "message", "msg_id": f"{1:032x}"})  # forgotten: max_ids 2
    # After a reconnect, a message of a known origin older than the first one handed
    # out for it came from before the subscription (a restarted node's new history).
    older = ResumeState([], None)
    older.request()
    run = "ab" * 8
    assert older.accept({"event": "message", "msg_id": f"{run}{7:016x}"})
    assert older.accept({"event": "message", "msg_id": f"{run}{5:016x}"})  # before: kept
    older.reconnects = 1
    assert not older.accept({"event": "message", "msg_id": f"{run}{3:016x}"})
    assert older.older == 1
    assert older.accept({"event": "message", "msg_id": f"{run}{6:016x}"})  # missed: kept
    assert older.accept({"event": "message", "msg_id": f"{'cd' * 8}{1:016x}"})  # new run
    with pytest.raises(ValueError, match="initial"):
        Reconnect(initial=0)
    assert list(zip(range(5), Reconnect(initial=0.5, max_delay=2).delays(), strict=False)) \
        == [(0, 0.5), (1, 1.0), (2, 2.0), (3, 2.0), (4, 2.0)]
    assert isinstance(BlockingClient, type)


def test_a_subscription_without_retained_messages_asks_so_on_every_connection() -> None:
    """``retained=False`` (``recv --reconnect --no-retained``): the first subscribe and
    each one after a reconnect say ``"retained": false``."""
    state = ResumeState(["temp"], None, retained=False)
    assert state.request() == {"op": "subscribe", "topics": ["temp"], "retained": False}
    state.accept({"event": "message", "msg_id": f"{4:032x}"})
    again = state.request()
    assert (again["since"], again["retained"]) == (f"{4:032x}", False)
    assert "retained" not in ResumeState(["temp"], None).request()
