"""Restart continuity with the message store (issue 17), real nodes on the in-memory
network in virtual time, each with its own store file.

Node B restarts (a clean stop, or a kill without telling its peers) while A and C go
on publishing. B's apps (one ``on_deliver`` list across both runs) must never get a
message twice, must get each origin's messages in its order, B must fetch from its
peers only the batches it lacks, B's new messages must be taken as new by its peers
(its epoch goes on), and B must repair its peers with what it had before the restart.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.api.replaying import HistoryReplay, Refilling
from p2pnode.node import Node
from p2pnode.store.db import Row
from p2pnode.store.service import StoreService
from p2pnode.testing import MemoryNetwork, make_identity, memory_config, wait_linked, wait_until
from p2pnode.wire.messages import Gossip

A, B, C = 0, 1, 2


@pytest.fixture(autouse=True)
def inline_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store calls in the event loop's thread: virtual time does not run ahead of them."""
    monkeypatch.setattr(StoreService, "inline", True)
EDGES = [(1, 0), (1, 2), (0, 2)]  # B dials A and C


async def start(nursery: trio.Nursery, net: MemoryNetwork, base: Path, n: int,
                edges: list[tuple[int, int]],
                overrides: dict[int, dict[str, object]] | None = None) -> list[Node]:
    """Nodes 0..n-1, each with its own store file; ``overrides``: per node, settings."""
    rng = random.Random(7)
    nodes = []
    for i in range(n):
        peers = tuple(("mem", j + 1) for a, j in edges if a == i)
        mine = (overrides or {}).get(i, {})
        cfg = memory_config(i, peers=peers, store=str(base / f"n{i}.sqlite3"), **mine)
        node = Node(cfg, transport=net.transport(), identity=make_identity(rng), api=False)
        await nursery.start(node.run)
        nodes.append(node)
    return nodes


async def restart(nursery: trio.Nursery, net: MemoryNetwork, old: Node, *, clean: bool,
                  down_for: float = 0.0) -> Node:
    """Stop ``old`` (``stop``, or ``kill`` as a crash would) and start it again after
    ``down_for`` seconds with the same identity, settings and store file."""
    if clean:
        await old.stop(grace=0.2)
    else:
        old.kill()
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(down_for)
    new = Node(old.config, transport=net.transport(), identity=old.identity, api=False)
    await nursery.start(new.run)
    return new


class Published:
    """Per origin, the message ids in publish order."""

    def __init__(self) -> None:
        self.ids: dict[bytes, list[bytes]] = {}

    def add(self, node: Node, payload: bytes, size: int = 0) -> None:
        msg_id, _ = node.publish("t", payload.ljust(size, b"."))
        self.ids.setdefault(node.node_id, []).append(bytes.fromhex(msg_id))

    def all(self) -> set[bytes]:
        return {i for ids in self.ids.values() for i in ids}

    def rank(self, msg: Gossip) -> int:
        return self.ids[msg.origin].index(msg.id)


async def publish_every(nodes: list[Node], pub: Published, count: int, gap: float,
                        size: int = 0) -> None:
    for k in range(count):
        for node in nodes:
            pub.add(node, b"%d" % k, size)
        await trio.sleep(gap)


def check_apps(got: list[Gossip], pub: Published) -> None:
    """No message twice, each origin's in its order."""
    twice = [i.hex() for i, n in Counter(g.id for g in got).items() if n > 1]
    assert not twice, f"{len(twice)} messages delivered twice"
    for origin in pub.ids:
        ranks = [pub.rank(g) for g in got if g.origin == origin]
        assert ranks == sorted(ranks), "out of its origin's order"


@pytest.mark.parametrize(("clean", "size"), [(True, 0), (False, 0), (True, 1000), (False, 1000)])
async def test_a_restarted_node_delivers_nothing_twice_and_fetches_only_what_it_lacks(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, clean: bool, size: int,
) -> None:
    """``size`` 1000: B's and C's histories in memory hold about 30 of the batches (40
    kB), less than A and C publish: B's store has more than it puts back in memory,
    and A's history (4 MiB) reaches further back than B's does after the restart."""
    net = MemoryNetwork()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            small = {"history_bytes": 40_000} if size else {}
            nodes = await start(nursery, net, short_tmp, 3, EDGES, {B: small, C: small})
            await wait_linked(nodes, EDGES)
            a, b, c = nodes
            pub = Published()
            got: list[Gossip] = []  # what B's apps got, across both runs
            b.on_deliver.append(got.append)
            await publish_every([a, c], pub, 30, 0.02, size)
            await wait_until(lambda: len(got) == 60)
            async with trio.open_nursery() as inner:
                # A and C publish on while B restarts: what B misses, it gets from them
                # once it is back.
                inner.start_soon(publish_every, [a, c], pub, 40, 0.02, size)
                await trio.sleep(0.2)
                b = await restart(nursery, net, b, clean=clean, down_for=0.3)
                b.on_deliver.append(got.append)
            await wait_linked([a, b, c], EDGES)
            await publish_every([a, c], pub, 20, 0.02, size)
            await wait_until(lambda: pub.all() <= {g.id for g in got})
            await trio.sleep(2.0)  # repairs done
            check_apps(got, pub)
            # B took each batch once, across both runs: its store holds each once.
            store = b.storing.service
            assert store is not None
            rows = store.store.after(0, 10_000)
            keys = Counter((r.origin, r.epoch, r.seq) for r in rows)
            assert max(keys.values()) == 1, "a batch stored twice"
            assert len(rows) == 180
            # What B fetched by repair: only what was published while it was away.
            # What B fetched by repair: what it missed while away (one batch each), not
            # what it had before (none of that came again, nor was taken as new).
            taken = store.queued  # batches new to B since the restart
            assert 20 <= b.router.stats.grafts_sent <= taken, (b.router.stats, taken)
            assert b.router.order.stats.stale == 0
            # B's own messages after the restart reach its peers (its epoch went on).
            mine = Published()
            at_a: list[Gossip] = []
            a.on_deliver.append(at_a.append)
            await publish_every([b], mine, 10, 0.02)
            await wait_until(lambda: mine.all() <= {g.id for g in at_a})
            nursery.cancel_scope.cancel()


async def test_a_restarted_node_repairs_a_new_peer_with_what_it_had_before(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    """A publishes; B restarts; a new node D that links to B alone gets A's messages
    from before B's restart out of B's restored history."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a, b = await start(nursery, net, short_tmp, 2, [(1, 0)])
            await wait_linked([a, b], [(1, 0)])
            pub = Published()
            got: list[Gossip] = []
            b.on_deliver.append(got.append)
            await publish_every([a], pub, 30, 0.02)
            await wait_until(lambda: len(got) == 30)
            b = await restart(nursery, net, b, clean=True)
            await wait_linked([a, b], [(1, 0)])
            a.kill()  # only B can repair D now
            cfg = memory_config(3, peers=(("mem", 2),), store="none")
            d = Node(cfg, transport=net.transport(), identity=make_identity(random.Random(9)),
                     api=False)
            at_d: list[Gossip] = []
            d.on_deliver.append(at_d.append)
            await nursery.start(d.run)
            await wait_until(lambda: pub.all() <= {g.id for g in at_d})
            check_apps(at_d, pub)
            nursery.cancel_scope.cancel()



async def run_async(replay: HistoryReplay) -> list[Gossip]:
    out: list[Gossip] = []
    while not replay.done:
        out += replay.step(1 << 16)
        if isinstance(replay, Refilling) and replay.starved:
            await replay.refill()
    return out


@pytest.mark.parametrize("clean", [True, False])
async def test_since_after_a_restart_replays_from_the_store_what_memory_no_longer_has(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, clean: bool,
) -> None:
    """B's history in memory holds about 30 batches. Its app saw messages up to M (from
    A); B restarts while A and C go on publishing 150 more, and the app resumes with
    ``since`` M seconds later: M is long gone from memory, but stored. It gets every
    message it had not seen, each origin's in order, none twice, and nothing of A's
    from before M."""
    net = MemoryNetwork()
    small = {"history_bytes": 40_000}
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = await start(nursery, net, short_tmp, 3, EDGES, {B: small})
            await wait_linked(nodes, EDGES)
            a, b, c = nodes
            pub = Published()
            seen: list[Gossip] = []
            b.on_deliver.append(seen.append)
            await publish_every([a, c], pub, 20, 0.02, 1000)
            pub.add(a, b"last", 1000)
            await wait_until(lambda: len(seen) == 41)
            last = seen[-1]
            assert last.origin == a.node_id
            delivered: set[bytes] = set()
            async with trio.open_nursery() as inner:
                inner.start_soon(publish_every, [a, c], pub, 75, 0.02, 1000)
                await trio.sleep(0.2)
                b = await restart(nursery, net, b, clean=clean, down_for=0.3)
                b.on_deliver.append(lambda g: delivered.add(g.id))
            await wait_until(lambda: pub.all() <= delivered | {g.id for g in seen})
            await trio.sleep(3.0)  # a slow app
            assert not any(last.id in (e.first_id, e.last_id) for e in b.router.history)
            replay = b.open_replay(last.id, frozenset())
            got = await run_async(replay)
            assert replay.found is True
            missed = pub.all() - {g.id for g in seen}
            got_ids = [g.id for g in got]
            assert missed <= set(got_ids), f"lost {len(missed - set(got_ids))}"
            assert len(got_ids) == len(set(got_ids))
            check_apps(got, pub)
            assert all(pub.rank(g) > pub.rank(last) for g in got if g.origin == a.node_id)
            nursery.cancel_scope.cancel()


async def test_a_crash_that_loses_the_unwritten_tail_delivers_that_tail_again_and_only_it(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    """B hands messages to its apps as they come and writes them a moment later. A
    crash between the two (simulated: B's last 10 batches are never written) loses
    them from the store: after the restart B fetches them again from A and its apps
    get them again (at least once: docs/store.md), in order, and nothing else twice."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a, b = await start(nursery, net, short_tmp, 2, [(1, 0)])
            await wait_linked([a, b], [(1, 0)])
            pub = Published()
            got: list[Gossip] = []
            b.on_deliver.append(got.append)
            await publish_every([a], pub, 20, 0.02)
            await wait_until(lambda: len(got) == 20)
            service = b.storing.service
            assert service is not None
            lost: list[Row] = []  # kept, never written: what a crash would lose
            service.keep = lost.append  # type: ignore[method-assign]
            tail = Published()
            await publish_every([a], tail, 10, 0.02)
            await wait_until(lambda: len(got) == 30)
            b = await restart(nursery, net, b, clean=False)
            b.on_deliver.append(got.append)
            await wait_linked([a, b], [(1, 0)])
            await publish_every([a], pub, 10, 0.02)
            await wait_until(lambda: len(got) >= 50)
            await trio.sleep(2.0)
            assert len(lost) == 10
            twice = {i for i, n in Counter(g.id for g in got).items() if n > 1}
            assert twice == tail.all()
            assert len(got) == 50
            ranks = [pub.rank(g) if g.id in pub.all() else -1 for g in got[30:]]
            assert ranks == sorted(ranks)  # the tail again first, then the new ones
            nursery.cancel_scope.cancel()
