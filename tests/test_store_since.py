"""``subscribe`` with ``since`` from the message store (``store.replay``): the order
of the rows it reads (``StoreCursor``, on a real SQLite file), and through a node's
API in real time, the store read in its worker thread."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api import replaying
from p2pnode.client import open_client
from p2pnode.node import Node
from p2pnode.store import replay as store_replay
from p2pnode.store.db import MessageStore, Row
from p2pnode.store.reading import stored_runs
from p2pnode.store.replay import StoreCursor
from p2pnode.testing import MemoryNetwork, make_identity, memory_config

ORIGINS = [bytes([k]) * 16 for k in range(1, 5)]


def row(origin: int, seq: int, age: float, epoch: int = 7) -> Row:
    prefix = bytes([origin]) * 4 + epoch.to_bytes(4, "big")
    first = prefix + (seq * 10).to_bytes(8, "big")
    return Row(ORIGINS[origin - 1], epoch, seq, seq.to_bytes(16, "big"), first,
               prefix + (seq * 10 + 2).to_bytes(8, "big"), age, 3, b"frame")


def arrivals(rng: random.Random, per_origin: int) -> list[Row]:
    """Rows of 4 origins in a plausible arrival order: mostly in each origin's order,
    some late (a gap filled later) and a burst of one origin's old ones at the end (a
    repair after a restart)."""
    rows = [row(o, s, 1000.0 + s + o / 10) for o in (1, 2, 3, 4)
            for s in range(1, per_origin + 1)]
    rows.sort(key=lambda r: r.age + rng.random() * 3)
    late = [r for r in rows if r.origin == ORIGINS[3] and r.seq < per_origin // 2]
    return [r for r in rows if r not in late] + late


def fresh_store(path: Path) -> MessageStore:
    """A store opened long before the rows of these tests were published (more than
    ``RESTART_WINDOW`` before): none of them can have come again after a restart."""
    store = MessageStore(path)
    store.boot_time = -1e9
    return store


def read_all(cursor: StoreCursor, store: MessageStore) -> list[Row]:
    out: list[Row] = []
    while True:
        rows = cursor.next_rows(store)
        if not rows:
            return out
        assert len(rows) <= store_replay.CHUNK + store_replay.LOOKBACK + store_replay.PULL
        out += rows


@pytest.mark.parametrize("seed", range(12))
def test_the_store_is_read_in_each_origins_order_with_nothing_lost_or_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
) -> None:
    """Small chunks and pulls (so that a chunk is read again); some rows still queued
    (``pending``). The rows replayed after M are exactly: those placed after M's, M's
    own, and those placed before M up to ``hold`` older (of M's origin, those after M
    in its order); each origin's in its order."""
    monkeypatch.setattr(store_replay, "CHUNK", 7)
    monkeypatch.setattr(store_replay, "PULL", 3)
    rng = random.Random(seed)
    rows = arrivals(rng, 40)
    store = fresh_store(tmp_path / "s.sqlite3")
    stored, pending = rows[:130], rows[130:]
    store.append(stored)
    placed = {(r.origin, r.seq): pos for pos, r in enumerate(rows, 1)}
    m = stored[rng.randrange(len(stored))] if seed % 4 else None
    after_id = m.first_id if m is not None else b"\x09" * 16
    cursor = StoreCursor(after_id, store.last_pos, pending, hold=1.0)
    got = read_all(cursor, store)
    assert cursor.found is (m is not None)
    keys = [(r.origin, r.seq) for r in got]
    assert max(Counter(keys).values()) == 1, "a row twice"
    for origin in ORIGINS:
        seqs = [r.seq for r in got if r.origin == origin]
        assert seqs == sorted(seqs), "out of its origin's order"
    if m is None:
        assert set(keys) == set(placed)
        return
    pos_m = placed[(m.origin, m.seq)]
    want = {k for k, pos in placed.items() if pos >= pos_m}
    want |= {(r.origin, r.seq) for r in rows if (r.origin != m.origin or r.seq > m.seq)
             and m.age - 1.0 <= r.age <= m.age and placed[(r.origin, r.seq)] < pos_m}
    assert set(keys) == want
    store.close()


def test_the_rows_read_stay_within_a_bound_whatever_the_stores_size(tmp_path: Path) -> None:
    """A store of 3,000 rows, one origin's first 1,500 placed last: each call hands out
    at most a chunk and a pull, in that origin's order."""
    store = fresh_store(tmp_path / "s.sqlite3")
    rows = [row(1, s, 1000.0 + s) for s in range(1501, 3001)]
    rows += [row(1, s, 1000.0 + s) for s in range(1, 1501)]
    store.append(rows)
    cursor = StoreCursor(b"\x09" * 16, store.last_pos, [], hold=1.0)
    seqs: list[int] = []
    calls = 0
    while batch := cursor.next_rows(store):
        calls += 1
        assert len(batch) <= store_replay.CHUNK + store_replay.PULL
        seqs += [r.seq for r in batch]
    assert seqs == list(range(1, 3001))
    assert calls > 3000 // (store_replay.CHUNK + store_replay.PULL)
    store.close()


# -- through the API, in real time ----------------------------------------------------------


async def test_since_an_id_long_gone_from_memory_replays_from_the_store_then_live(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """History in memory holds 20 batches; the app saw message 10 of 600 (in 60
    batches). ``since`` it replays the 589 after it from the store (found), the newest
    of them perhaps not written yet, a message per turn of the event loop while live
    messages come; then the live ones, each once, none missed."""
    monkeypatch.setattr(replaying, "STEP_BUDGET", 1)
    started = trio.Event()
    real_stream = replaying.stream_replay

    async def stream_replay(replay: Any, out: Any, *more: Any) -> tuple[int, int]:
        started.set()
        return await real_stream(replay, out, *more)

    monkeypatch.setattr(replaying, "stream_replay", stream_replay)
    net = MemoryNetwork()
    cfg = memory_config(0, socket_path=short_tmp / "a.sock", history_batches=20,
                        store=str(short_tmp / "a.sqlite3"))
    live: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = Node(cfg, transport=net.transport(), identity=make_identity(
                random.Random(1)), api=True)
            await nursery.start(node.run)
            ids = []
            for k in range(600):
                ids.append(node.publish("t", f"h{k}".encode())[0])
                if k % 10 == 9:
                    await trio.sleep(0.001)  # a batch of ten
            assert len(node.router.history) == 20
            api = node.api
            assert api is not None

            async def publish_while_replaying() -> None:
                await started.wait()
                k = 0
                while any(s.backlog is not None for s in api.sessions):
                    node.publish("t", f"live{k}".encode())
                    live.append(f"live{k}")
                    k += 1
                    await trio.lowlevel.checkpoint()

            async with await open_client(cfg.socket_path) as client:
                nursery.start_soon(publish_while_replaying)
                reply = await client.subscribe(["t"], since=ids[10])
                node.publish("t", b"after")
                assert reply["since_found"] is True
                assert reply["replayed"] == 589
                events = [await client.next_event() for _ in range(589 + len(live) + 1)]
            nursery.cancel_scope.cancel()
    assert len(live) >= 10  # the replay took many turns, and messages came meanwhile
    assert [e["data"] for e in events] == [f"h{k}" for k in range(11, 600)] + live + ["after"]
    assert [bool(e.get("replay")) for e in events] == [True] * 589 + [False] * (len(live) + 1)


def ranges_of(seqs: list[int], max_ranges: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    while len(out) > max_ranges:
        first = out.pop(0)
        out[0] = (first[0], out[0][1])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_the_numbers_stored_per_origin_run_are_found_as_ranges(tmp_path: Path,
                                                                seed: int) -> None:
    """``stored_runs`` (what a restarted node seeds its order buffer and digests with),
    by bisecting the runs with holes: the same ranges as read number by number, the
    newest ``max_ranges`` of them, the lowest merged; newest runs first."""
    rng = random.Random(seed)
    store = MessageStore(tmp_path / "s.sqlite3")
    want = {}
    rows = []
    for origin in range(1, 4):
        for epoch in (5, 9):
            seqs = [s for s in range(1, rng.choice([10, 300, 3000]))
                    if rng.random() > rng.choice([0.0, 0.01, 0.3])]
            if rng.random() < 0.3:
                seqs = [s for s in seqs if not 100 < s < 900]
            if seqs:
                want[(ORIGINS[origin - 1], epoch)] = ranges_of(seqs, 8)
                rows += [row(origin, s, 1.0, epoch) for s in seqs]
    rows += rows[:5]  # a few stored twice
    rng.shuffle(rows)
    store.append(rows)
    got = stored_runs(store, 8)
    assert got == want
    assert list(got) == sorted(got, key=lambda k: -k[1])
    store.close()


def test_an_id_not_stored_is_placed_after_its_runs_batch_before_it(tmp_path: Path) -> None:
    """M came just before a crash and was not written: its run's stored batch before it
    (by the ids: a run's prefix and a counter) is where the replay starts."""
    store = fresh_store(tmp_path / "s.sqlite3")
    store.append([row(1, 1, 1.0), row(2, 1, 1.1), row(1, 2, 1.2), row(2, 2, 1.3)])
    unwritten = row(1, 3, 1.4).first_id
    cursor = StoreCursor(unwritten, store.last_pos, [], hold=0.0)
    got = read_all(cursor, store)
    assert cursor.found is True
    assert cursor.exact is False
    assert cursor.start is not None
    assert cursor.start.seq == 2
    assert [(r.origin, r.seq) for r in got] == [(ORIGINS[0], 2), (ORIGINS[1], 2)]
    cursor = StoreCursor(row(3, 1, 1.0).first_id, store.last_pos, [], hold=0.0)
    assert len(read_all(cursor, store)) == 4
    assert cursor.found is False
    store.close()


@pytest.mark.parametrize(("chunk", "boot"), [(256, None), (2, None), (256, 105.0)])
def test_since_an_id_that_came_again_after_a_restart_loses_nothing_placed_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, boot: float | None,
) -> None:
    """The soak's loss (issue 17): the app got M just before its node was killed, and M
    was not written. After the restart, fresh messages came first (of M's origin, newer
    than M, and of a new run of another node), then M and the rest came again through
    repair. Resuming after M replays all of those, in each origin's order, and nothing
    of M's origin up to M; once each (``chunk`` 2: rows looked at again before M are
    placed after the first chunk's end; ``boot`` 105: the node started before M's date,
    as when M, repaired as its origin's newest, was dated by its arrival)."""
    monkeypatch.setattr(store_replay, "CHUNK", chunk)
    path = tmp_path / "s.sqlite3"
    store = MessageStore(path)
    store.append([row(1, s, 100.0 + s) for s in range(1, 11)]
                 + [row(2, s, 100.5 + s) for s in range(1, 11)])
    store.close()
    store = MessageStore(path)  # the restart: this run places from position 21 on
    assert store.boot_pos == 20
    if boot is not None:
        store.boot_time = boot
    m = row(1, 11, 111.0)
    store.append([row(1, 14, 114.0), row(3, 1, 114.2, epoch=8), row(1, 15, 115.0),
                  row(3, 2, 115.2, epoch=8), row(4, 1, 110.8)])  # live, first
    store.append([row(1, 12, 112.0), m, row(1, 13, 113.0)])  # repair: M came again
    store.append([row(1, 16, 116.0)])
    cursor = StoreCursor(m.first_id, store.last_pos, [], hold=1.0)
    got = read_all(cursor, store)
    assert cursor.found is True
    assert cursor.exact is True
    by_origin = {o: [r.seq for r in got if r.origin == ORIGINS[o - 1]] for o in (1, 3)}
    assert by_origin[3] == [1, 2]
    # M's own batch may come (its items after M: none); every later one, in order.
    assert [s for s in by_origin[1] if s != 11] == [12, 13, 14, 15, 16]
    assert not [r for r in got if r.origin == ORIGINS[1] and r.seq < 10]
    assert [r.seq for r in got if r.origin == ORIGINS[3]] == [1]
    assert max(Counter((r.origin, r.seq) for r in got).values()) == 1, "a row twice"
    store.close()
