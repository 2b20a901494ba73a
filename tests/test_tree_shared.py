"""Link lists (``$mesh``) go by one broadcast tree shared by every origin
(``gossip.tree.SHARED``), not by a first flood per origin: pure simulations (no I/O)."""

from __future__ import annotations

import pytest

from p2pnode.gossip.signing import make_batch
from p2pnode.gossip.tree import SHARED, tree_key
from p2pnode.mesh.linklist import MESH_TOPIC
from p2pnode.wire.messages import Batch, BatchBody, Graft, Item, Prune

from .gossip_sim import Edges, Sim, random_connected

TOPOLOGIES = [pytest.param(20, random_connected(20, 30, seed), id=f"random20-seed{seed}")
              for seed in range(3)]


def link_list(sim: Sim, node: int, k: int, topic: str = MESH_TOPIC) -> tuple[Batch, BatchBody]:
    """Batch ``k`` of ``node``: one message on ``topic`` (a link list by default)."""
    prefix = sim.ids[node][:8]
    msgs = [Item(prefix + k.to_bytes(8, "big"), topic, b"links of %d" % node)]
    sim.seq[node] += 1
    return make_batch(sim.identities[node], prefix + k.to_bytes(8, "big"), None, msgs,
                      epoch=1, seq=sim.seq[node])


def copies(sim: Sim, batch: Batch) -> int:
    return sum(sim.received[(i, batch.id)] for i in range(len(sim.routers)))


def publish(sim: Sim, node: int, k: int, topic: str = MESH_TOPIC) -> Batch:
    batch, body = link_list(sim, node, k, topic)
    sim.publish(node, batch, body)
    sim.run()
    return batch


def test_tree_key_is_shared_only_for_batches_of_link_lists_to_everyone() -> None:
    sim = Sim(2, [(0, 1)], mode="tree")
    origin = sim.ids[0]
    assert tree_key(origin, link_list(sim, 0, 1)[1]) == SHARED
    assert tree_key(origin, link_list(sim, 0, 2, "t")[1]) == origin
    _, body = link_list(sim, 0, 3)
    mixed = BatchBody(body.id, body.origin, None, [*body.items, Item(b"x" * 16, "t", b"")],
                      body.epoch, body.seq)
    assert tree_key(origin, mixed) == origin
    assert tree_key(origin, BatchBody(body.id, body.origin, sim.ids[1], body.items,
                                      body.epoch, body.seq)) == origin
    assert tree_key(origin, None) == origin


@pytest.mark.parametrize(("n", "edges"), TOPOLOGIES)
def test_a_new_origins_first_link_list_does_not_flood(n: int, edges: Edges) -> None:
    sim = Sim(n, edges, mode="tree")
    sim.run()  # the digests of the links that just opened
    first = publish(sim, 0, 1)
    assert copies(sim, first) > n - 1  # the shared tree forms: a flood, pruned
    prunes = sim.kinds["Prune"]
    assert prunes > 0
    # Every other node's first list: one copy per node, along the shared tree.
    for node in range(1, n):
        batch = publish(sim, node, 1)
        assert [sim.received[(i, batch.id)] for i in range(n)] == [
            0 if i == node else 1 for i in range(n)]
    assert sim.kinds["Prune"] == prunes  # no duplicate since the first list
    assert sum(r.stats.grafts_sent for r in sim.routers) == 0
    for i in range(n):  # each node got every list (its own is not delivered to it)
        assert len(sim.delivered[i]) == n - 1
    # An app batch of a new origin still floods its own tree first (per origin).
    app = publish(sim, 5, 2, "t")
    assert copies(sim, app) > n - 1


def test_a_prune_and_a_graft_of_the_shared_tree() -> None:
    sim = Sim(3, [(0, 1), (1, 2)], mode="tree")
    sim.run()
    publish(sim, 0, 1)
    r, peer = sim.routers[1], sim.ids[2]
    r.on_message(Prune([SHARED]), peer, 1.0, sim.verifiers[1])
    assert r.lazy_peers(SHARED) == {peer}
    batch = publish(sim, 0, 2)  # announced to node 2, not pushed: it grafts it
    assert sim.received[(2, batch.id)] == 1
    assert r.stats.grafts_received == 1
    assert r.lazy_peers(SHARED) == set()  # the graft of a link list made it eager again
    assert sim.routers[2].stats.grafts_sent == 1
    # A peer that pushes a list again though it was pruned (it was grafted since) is
    # pruned again.
    r.on_message(Prune([SHARED]), peer, 2.0, sim.verifiers[1])
    again = r.on_message(batch, peer, 2.0, sim.verifiers[1])
    assert [type(m) for a in again for m in getattr(a, "msgs", [])] == [Prune]
    assert not r.on_message(Graft([], [b"\x09" * 16]), peer, 2.0, sim.verifiers[1])
