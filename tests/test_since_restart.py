"""``since`` and history across a node's restart (issue 17, the in-memory history), with
real nodes on the in-memory network in virtual time.

After a restart, the node's history fills again from two sides: fresh messages come
live as soon as its links are up, and its peers' older history comes a moment later
through repair. Two defects came of taking arrival order for "after" and "oldest":

1. A subscriber that resumes with ``since`` the last id it saw (before the restart)
   got only what arrived after that id's copy, which came late through repair: the
   fresh messages that came before it were skipped.
2. A full history dropped the fresh messages first, since the repaired old ones
   arrived after them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from p2pnode.gossip.replay import Replay
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, start_memory_mesh, wait_linked, wait_until
from p2pnode.wire.messages import Gossip

EDGES = [(0, 1), (0, 2), (1, 2)]  # node 0 restarts; nodes 1 and 2 publish


@dataclass
class Published:
    """What the publishers published: per origin, the ids in publish order."""

    ids: dict[bytes, list[bytes]] = field(default_factory=dict)

    def add(self, node: Node, topic: str, payload: bytes) -> None:
        msg_id, _ = node.publish(topic, payload)
        self.ids.setdefault(node.node_id, []).append(bytes.fromhex(msg_id))

    def all(self) -> set[bytes]:
        return {i for ids in self.ids.values() for i in ids}


async def publish_every(nodes: list[Node], pub: Published, count: int, gap: float) -> None:
    for k in range(count):
        for node in nodes:
            pub.add(node, "t", b"%d" % k)
        await trio.sleep(gap)


def run(replay: Replay) -> list[Gossip]:
    out: list[Gossip] = []
    while not replay.done:
        out += replay.step(1 << 16)
    return out


async def restart(nursery: trio.Nursery, net: MemoryNetwork, old: Node,
                  **overrides: object) -> Node:
    """Kill ``old`` and start a new run of it (same identity and settings, nothing kept)."""
    old.kill()
    await trio.testing.wait_all_tasks_blocked()
    config = dataclasses.replace(old.config, **overrides)  # type: ignore[arg-type]
    new = Node(config, transport=net.transport(), identity=old.identity, api=False)
    await nursery.start(new.run)
    return new


@pytest.mark.parametrize("quiet", [False, True])
async def test_since_after_a_restart_replays_every_message_the_app_missed_in_origin_order(
    autojump_clock: trio.testing.MockClock, quiet: bool,
) -> None:
    """The app at node 0 saw messages up to its node's kill; its last one, M, is from node
    1. Node 0 restarts while both peers go on publishing, and the app resumes with
    ``since`` M a few seconds later: it gets every message it had not seen, each
    origin's in publish order. ``quiet``: node 1 publishes nothing after M (M's position
    then says nothing; M came by repair, so everything of node 2 is replayed)."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, EDGES, 3, network=net, seed=17)
            await wait_linked(nodes, EDGES)
            a, b, c = nodes
            pub = Published()
            seen: list[Gossip] = []
            a.on_deliver.append(seen.append)
            await publish_every([b, c], pub, 20, 0.02)
            # The last message the app saw comes from b.
            pub.add(b, "t", b"last")
            await wait_until(lambda: len(seen) == 41)
            last = seen[-1].id
            assert seen[-1].origin == b.node_id
            a = await restart(nursery, net, a)
            delivered: set[bytes] = set()
            a.on_deliver.append(lambda g: delivered.add(g.id))
            publishers = [c] if quiet else [b, c]
            await publish_every(publishers, pub, 10, 0.02)  # while node 0 is down
            await wait_linked([a, b, c], EDGES)
            await publish_every(publishers, pub, 40, 0.02)  # fresh, then repair comes too
            missed = pub.all() - {g.id for g in seen}
            await wait_until(lambda: pub.all() <= delivered)  # all in node 0's history
            await trio.sleep(3.0)  # a slow app
            replay = a.open_replay(last, frozenset())
            got = run(replay)
            assert replay.found is True
            got_ids = [g.id for g in got]
            assert missed <= set(got_ids), f"lost {len(missed - set(got_ids))}"
            assert len(got_ids) == len(set(got_ids))  # no message twice in one replay
            for origin, ids in pub.ids.items():
                rank = {i: k for k, i in enumerate(ids)}
                mine = [rank[g.id] for g in got if g.origin == origin]
                assert mine == sorted(mine), "out of its origin's order"
            # Nothing of node 1 from before M (the app saw those).
            assert all(rank_of(pub, g) > rank_of(pub, seen[-1]) for g in got
                       if g.origin == b.node_id)
            nursery.cancel_scope.cancel()


def rank_of(pub: Published, msg: Gossip) -> int:
    return pub.ids[msg.origin].index(msg.id)


async def test_a_full_history_keeps_the_newest_messages_after_a_restart_repair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nodes 1 and 2 hold 200 batches each; node 0 restarts with room for 60 while they
    go on publishing: the fresh batches come first, the peers' old history after them
    through repair. Node 0's full history keeps the newest (the fresh ones), not the
    repaired old ones that arrived last."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, EDGES, 3, network=net, seed=18)
            await wait_linked(nodes, EDGES)
            a, b, c = nodes
            pub = Published()
            await publish_every([b, c], pub, 200, 0.01)
            a = await restart(nursery, net, a, history_batches=60)
            delivered: set[bytes] = set()
            a.on_deliver.append(lambda g: delivered.add(g.id))
            await wait_linked([a, b, c], EDGES)
            fresh = Published()
            await publish_every([b, c], fresh, 20, 0.02)
            await wait_until(lambda: fresh.all() <= delivered)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(2.0)  # every repair graft answered
            history = a.router.history
            assert len(history) == 60
            assert history.evicted > 0  # the repair brought more than fits
            newest = [e for e in history if e.seq > 200]
            assert len(newest) == 40, f"only {len(newest)} of the 40 fresh batches kept"
            # The rest of the room holds the newest of the old ones, per origin.
            for origin in (b.node_id, c.node_id):
                seqs = sorted(e.seq for e in history if e.batch.origin == origin)
                assert seqs == list(range(seqs[0], 221))
            nursery.cancel_scope.cancel()
