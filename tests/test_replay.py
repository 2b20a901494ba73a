"""Replays of history (``subscribe`` with ``since``): the history's index, the pure
``Replay`` (start point, what is skipped, work per step), and, through the local API of
a node on the in-memory network in virtual time, the streamed replay's order promise
and the per-client rate limit (issue 12, defect 4)."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.api import replaying
from p2pnode.api import server as server_module
from p2pnode.api.protocol import Bye
from p2pnode.api.server import ApiServer
from p2pnode.client import ApiReplyError, open_client
from p2pnode.gossip import replay as replay_module
from p2pnode.gossip.history import ANY_ID, History, item_id_range
from p2pnode.gossip.replay import ITEM_COST, Replay
from p2pnode.gossip.signing import make_batch
from p2pnode.identity import NodeIdentity
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, make_identity, memory_config
from p2pnode.wire.messages import Batch, Item

ME = b"\x0a" * 16
ORIGIN = make_identity(random.Random(5))


def mid(k: int) -> bytes:
    return b"\x11" * 8 + k.to_bytes(8, "big")


def batch(identity: NodeIdentity, n: int, items: list[tuple[int, str]], *,
          to: bytes | None = None, epoch: int = 1) -> tuple[Batch, list[bytes]]:
    """Batch number ``n`` (its seq) of messages (id number, topic); data is "m<k>"."""
    its = [Item(mid(k), topic, f"m{k}".encode()) for k, topic in items]
    b, _ = make_batch(identity, n.to_bytes(16, "big"), to, its, epoch=epoch, seq=n)
    return b, [i.id for i in its]


def history_of(batches: list[tuple[Batch, list[bytes]]], *, times: list[float] | None = None,
               **limits: Any) -> History:
    h = History(limits.get("max_batches", 10_000), limits.get("max_bytes", 10 << 20),
                limits.get("max_age", 1e9))
    for k, (b, ids) in enumerate(batches):
        h.add(b, 1, k + 1, times[k] if times else float(k), None, id_range=item_id_range(ids))
    return h


def run(replay: Replay, budget: int = 1 << 30) -> list[str]:
    out: list[str] = []
    while not replay.done:
        out += [m.data.decode() for m in replay.step(budget)]
    return out


def make_replay(h: History, after: bytes | None = None, topics: tuple[str, ...] = (),
                held: dict[bytes, frozenset[tuple[int, int]]] | None = None) -> Replay:
    return Replay(h.since(-math.inf), after_id=after, topics=frozenset(topics), node_id=ME,
                  held=held or {}, hidden_topic="_mesh")


# -- the history's index ---------------------------------------------------------------------


def test_history_finds_a_time_by_bisection_through_removal_eviction_and_compaction() -> None:
    h = History(max_batches=1500, max_bytes=10 << 20, max_age=1e9)
    for k in range(4000):  # evicts 2,500: the order list is compacted on the way
        b, ids = batch(ORIGIN, k + 1, [(k, "t")])
        h.add(b, 1, k + 1, float(k), None, id_range=item_id_range(ids))
    assert len(h) == 1500
    assert h.evicted == 2500
    assert sum(not e.gone for e in h._order) == 1500
    assert len(h._order) < 3000  # compacted
    assert [e.seq for e in h.since(3990.0)] == list(range(3991, 4001))
    assert [e.seq for e in h.since(3990.5)] == list(range(3992, 4001))
    assert sum(not e.gone for e in h.since(0.0)) == 1500
    assert h.since(5000.0) == []
    victim = h.since(3995.0)[0]
    h.remove(victim.batch.origin + victim.batch.id)
    assert victim.gone
    assert victim.seq not in [e.seq for e in h]
    assert [e.seq for e in h.since(3994.0) if not e.gone] == [3995, 3997, 3998, 3999, 4000]
    h.expire(3997.0 + 1e9)  # everything up to time 3997 expires, the removed one with it
    assert [e.seq for e in h] == [3999, 4000]
    assert h.bytes == sum(e.size for e in h)
    # Batches removed as forged leave no unbounded trail in the order list.
    for k in range(5000, 6000):
        b, ids = batch(ORIGIN, k, [(k, "t")])
        h.add(b, 1, k, 3999.0 + 1e9 - 10, None, id_range=item_id_range(ids))
        h.remove(b.origin + b.id)
    assert [e.seq for e in h] == [3999, 4000]
    assert len(h._order) <= 2 + 65
    assert len(h._heap) <= 2 * 2 + 65
    assert [e.seq for e in h.since(0.0) if not e.gone] == [3999, 4000]


def test_history_keeps_time_order_when_the_clock_goes_back() -> None:
    h = History(max_batches=10, max_bytes=1 << 20, max_age=1e9)
    for k, t in enumerate([1.0, 5.0, 3.0, 6.0]):
        b, _ = batch(ORIGIN, k + 1, [(k, "t")])
        h.add(b, 1, k + 1, t, None)
    assert [e.time for e in h] == [1.0, 5.0, 5.0, 6.0]
    assert [e.seq for e in h.since(4.0)] == [2, 3, 4]
    assert all((e.first_id, e.last_id) == ANY_ID for e in h)  # ids not given: any


# -- Replay ------------------------------------------------------------------------------------


def test_replay_starts_after_an_id_decoding_only_the_batches_that_may_hold_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = history_of([batch(ORIGIN, n, [(3 * n + j, "t") for j in range(3)])
                    for n in range(1, 101)])  # ids 3..302, three per batch
    decoded: list[int] = []
    real = replay_module.decode_kept_body

    def counting(data: bytes) -> Any:
        decoded.append(len(data))
        return real(data)

    monkeypatch.setattr(replay_module, "decode_kept_body", counting)
    r = make_replay(h, after=mid(250))  # second of batch 83
    got = run(r)
    assert r.found is True
    assert got == [f"m{k}" for k in range(251, 303)]
    assert len(decoded) == 1 + 17  # the batch with 250, then the 17 after it
    decoded.clear()
    r = make_replay(h, after=mid(10_000))  # in no batch's range: nothing decoded to search
    assert run(r, budget=1) == [f"m{k}" for k in range(3, 303)]
    assert r.found is False
    assert len(decoded) == 100  # the replay of all of it
    r = make_replay(h, after=mid(302))  # the newest message: nothing after it
    assert (run(r), r.found) == ([], True)
    empty = make_replay(History(10, 1000, 10.0), after=mid(1))
    assert (run(empty), empty.found) == ([], False)


def test_replay_skips_held_batches_direct_messages_to_others_the_hidden_topic_and_topics(
) -> None:
    other = make_identity(random.Random(6))
    h = history_of([
        batch(ORIGIN, 1, [(1, "t"), (2, "u"), (3, "_mesh")]),
        batch(ORIGIN, 2, [(4, "t")], to=b"\x0b" * 16),  # to another node
        batch(ORIGIN, 3, [(5, "t")], to=ME),  # to this node
        batch(other, 1, [(6, "t")]),  # held at the snapshot (waiting for an earlier one)
        batch(ORIGIN, 4, [(7, "u"), (8, "t")]),
    ])
    held = {other.node_id: frozenset({(1, 4)})}  # entry 4 was added as seq 4 of run 1
    assert run(make_replay(h, held=held)) == ["m1", "m2", "m5", "m7", "m8"]
    assert run(make_replay(h, topics=("t",), held=held)) == ["m1", "m5", "m8"]
    assert run(make_replay(h, after=mid(1), topics=("u",), held=held)) == ["m2", "m7"]
    # Held in another run of that origin: not this one, so it is replayed.
    assert run(make_replay(h, held={other.node_id: frozenset({(2, 4)})})) == [
        "m1", "m2", "m5", "m6", "m7", "m8"]
    # The entry holding the id is held: what follows it in that batch is not replayed.
    assert run(make_replay(h, after=mid(7), held={ORIGIN.node_id: frozenset({(1, 5)})})) == []


def test_each_step_stays_within_its_budget() -> None:
    h = history_of([batch(ORIGIN, n, [(100 * n + j, "t") for j in range(100)])
                    for n in range(1, 21)])
    r = make_replay(h)
    steps = []
    while not r.done:
        steps.append(len(r.step(1000)))
    per_message = ITEM_COST + 4  # "m" and four digits
    assert sum(steps) == 2000
    assert max(steps) <= 1000 // per_message + 1
    assert len(steps) > 2000 // (1000 // per_message + 1)


def test_history_evicts_by_age_of_publication_not_arrival() -> None:
    """Batches 11-15 of an origin come live, one a second; batches 1-10 come later
    (repaired): they were published before 11, one a second (the origin's pace), so a
    full history drops them first, oldest first; one older than all it keeps is not
    kept at all."""
    other = make_identity(random.Random(7))
    h = History(max_batches=12, max_bytes=10 << 20, max_age=100.0)
    for n in range(11, 16):
        b, ids = batch(ORIGIN, n, [(n, "t")])
        h.add(b, 1, n, float(n), None, id_range=item_id_range(ids))
    for n in range(1, 11):
        b, ids = batch(ORIGIN, n, [(n, "t")])
        h.add(b, 1, n, 20.0, None, id_range=item_id_range(ids), repaired=True)
    assert h.evicted == 3
    assert sorted(e.seq for e in h) == list(range(4, 16))
    assert [e.age for e in sorted(h, key=lambda e: e.seq)][:3] == [4.0, 5.0, 6.0]
    assert {e.rank for e in h if e.seq <= 10} == {1}  # batch 11 arrived first of them
    b, ids = batch(other, 1, [(100, "t")])
    h.add(b, 1, 1, 21.0, None, id_range=item_id_range(ids))
    assert sorted(e.seq for e in h if e.batch.origin == ORIGIN.node_id) == list(range(5, 16))
    h.expire(108.5)  # ages 4-8 are over 100 s old
    assert sorted(e.seq for e in h if e.batch.origin == ORIGIN.node_id) == list(range(9, 16))


def test_replay_after_an_id_follows_origin_order_and_takes_what_the_app_may_have_missed(
) -> None:
    """M is batch 5 of ORIGIN. Replayed: ORIGIN's later batches, also those that came
    first (6, before M), in ORIGIN's order; batch 4, which came after M (a late gap);
    another origin's batches that came after the first of ORIGIN's batches from M on
    (batch 6's arrival), and one that came before but waited in the order buffer
    (``held``), up to the hold time. Not: ORIGIN's batch 3, nor the other origin's
    earlier ones."""
    other = make_identity(random.Random(8))
    h = History(max_batches=100, max_bytes=10 << 20, max_age=1e9)

    def add(identity: NodeIdentity, n: int, k: int, t: float, **kw: Any) -> None:
        b, ids = batch(identity, n, [(k, "t")])
        h.add(b, 1, n, t, None, id_range=item_id_range(ids), **kw)

    add(ORIGIN, 3, 3, 1.0)
    add(other, 1, 21, 1.5)  # before: the app saw it
    add(other, 2, 22, 2.5, held=True)  # before, but delivered up to 1 s later
    add(ORIGIN, 6, 6, 3.0)  # came before M (M came late, by repair)
    add(other, 3, 23, 3.5)
    add(ORIGIN, 5, 5, 4.0)  # M
    add(ORIGIN, 4, 4, 5.0)  # a gap filled after M
    add(other, 4, 24, 6.0)
    add(ORIGIN, 7, 7, 7.0)
    got = run(Replay(h.since(-math.inf), after_id=mid(5), topics=frozenset(), node_id=ME,
                     held={}, hidden_topic="_mesh", hold=1.0))
    assert got == ["m22", "m4", "m6", "m23", "m24", "m7"]
    # M came by repair: the app may have seen it before this node restarted, so every
    # batch of the other origin is replayed.
    h2 = History(max_batches=100, max_bytes=10 << 20, max_age=1e9)
    for identity, n, k, t in [(other, 1, 21, 1.0), (ORIGIN, 1, 1, 2.0), (other, 2, 22, 3.0)]:
        b, ids = batch(identity, n, [(k, "t")])
        h2.add(b, 1, n, t, None, id_range=item_id_range(ids), repaired=identity is ORIGIN)
    got = run(Replay(h2.since(-math.inf), after_id=mid(1), topics=frozenset(), node_id=ME,
                     held={}, hidden_topic="_mesh"))
    assert got == ["m21", "m22"]


# -- through the API, on a node in memory -----------------------------------------------------


@asynccontextmanager
async def api_node(clock: trio.testing.MockClock, **overrides: Any) -> AsyncIterator[Node]:
    """A node serving its API on ``socket_path``. trio binds the socket in a worker
    thread, so the clock does not autojump during the start."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        node = Node(memory_config(0, **overrides), transport=net.transport(),
                    identity=make_identity(random.Random(1)), api=True)
        clock.autojump_threshold = math.inf
        try:
            await nursery.start(node.run)
        finally:
            clock.autojump_threshold = 0
        yield node
        nursery.cancel_scope.cancel()


async def test_live_messages_during_a_streamed_replay_come_after_it_once_each(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replaying, "STEP_BUDGET", 1)  # a message per turn
    started = trio.Event()
    real_stream = replaying.stream_replay

    async def stream_replay(replay: Replay, out: Any, *more: Any) -> tuple[int, int]:
        started.set()
        return await real_stream(replay, out, *more)

    monkeypatch.setattr(replaying, "stream_replay", stream_replay)
    live: list[str] = []
    with trio.fail_after(60):
        async with api_node(autojump_clock, socket_path=short_tmp / "a.sock") as a:
            ids = []
            for k in range(50):
                ids.append(a.publish("t", f"h{k}".encode())[0])
                a.publish("other", b"x")
                if k % 5 == 4:
                    await trio.sleep(0.01)  # a batch of ten
            await trio.sleep(0.1)

            api = a.api
            assert api is not None

            async def publish_while_replaying() -> None:
                await started.wait()
                k = 0
                while any(s.backlog is not None for s in api.sessions):
                    a.publish("t", f"live{k}".encode())
                    live.append(f"live{k}")
                    k += 1
                    await trio.lowlevel.checkpoint()

            async with await open_client(a.config.socket_path) as client, \
                    trio.open_nursery() as nursery:
                nursery.start_soon(publish_while_replaying)
                reply = await client.subscribe(["t"], since=ids[9])
                a.publish("t", b"after")
                assert reply["replayed"] == 40
                assert reply["since_found"] is True
                assert "dropped" not in reply
                events = [await client.next_event() for _ in range(40 + len(live) + 1)]
    assert len(live) >= 10  # the replay took many turns, and messages came meanwhile
    assert [e["data"] for e in events] == [f"h{k}" for k in range(10, 50)] + live + ["after"]
    assert [bool(e.get("replay")) for e in events] == [True] * 40 + [False] * (len(live) + 1)


async def test_replays_are_rate_limited_per_client(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    with trio.fail_after(60):
        async with api_node(autojump_clock, socket_path=short_tmp / "a.sock",
                            client_replays_per_s=1.0) as a:
            a.publish("t", b"old")
            await trio.sleep(0.1)
            async with await open_client(a.config.socket_path) as client, \
                    await open_client(a.config.socket_path) as other:
                for _ in range(4):  # the burst: 4 seconds' worth
                    assert (await client.subscribe(["u"], since=0))["replayed"] == 0
                with pytest.raises(ApiReplyError) as info:
                    await client.subscribe(["t"], since=0)
                assert info.value.code == "rate_limited"
                assert info.value.message == (
                    "over 1 replays (subscribe with since) per second, in bursts of 4; "
                    "nothing was subscribed: wait a moment and retry, or subscribe "
                    "without since")
                assert (await other.subscribe(["t"], since=0))["replayed"] == 1  # its own
                a.publish("t", b"live")
                assert [(await other.next_event())["data"] for _ in range(2)] == ["old", "live"]
                await trio.sleep(1.0)
                # The refused request subscribed nothing: "live" comes only in the replay.
                assert (await client.subscribe(["t"], since=0))["replayed"] == 2
                assert [(await client.next_event())["data"] for _ in range(2)] == ["old", "live"]
                with trio.move_on_after(1.0):
                    raise AssertionError(await client.next_event())
                status = a.status_info().api
                assert status is not None
                assert (status.rate_limited, status.replays) == (1, 6)


async def test_one_read_of_many_requests_lets_other_tasks_run(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "TURN_BUDGET", 0.0)  # yield between all lines
    log: list[str] = []
    real_handle = ApiServer._handle

    def handle(self: ApiServer, session: Any, req: Any) -> Any:
        if not isinstance(req, Bye):  # the client's bye when it closes comes later
            log.append("request")
        return real_handle(self, session, req)

    monkeypatch.setattr(ApiServer, "_handle", handle)
    with trio.fail_after(60):
        async with api_node(autojump_clock, socket_path=short_tmp / "a.sock") as a, \
                await open_client(a.config.socket_path) as client, \
                trio.open_nursery() as nursery:

            async def other_task() -> None:
                while True:  # runnable at every turn (cancelled below)
                    log.append("other")
                    await trio.lowlevel.checkpoint()

            await client.stream.send_all(b'{"op":"status"}\n' * 50)
            nursery.start_soon(other_task)
            for _ in range(50):
                assert (await client.reply())["ok"] is True
            nursery.cancel_scope.cancel()
    first, last = log.index("request"), len(log) - log[::-1].index("request")
    between = log[first:last]
    assert between.count("request") == 50
    assert between.count("other") >= 45  # the other task ran between the requests
