"""A routed batch pushed into a link that broke goes again by the new tree
(``gossip/reroute.py``, docs/interest.md): the last batch of a stream, whose loss no
later batch would show, is not lost when the next node of its tree crashes."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from p2pnode.gossip.reroute import REROUTE_AGE, reroute
from p2pnode.testing import MemoryNetwork, ring_edges, wait_until

from .test_interest_mode_node import interest_mesh, ring_first_message
from .test_interest_router import delivered_to, receivers, routed, routed_sim

# 0 - 1 - 2 and 0 - 3 - 2: the tree from 0 to 2 goes by 1 (lower id first); only 2
# wants "a", so nobody on the other way hears of the batch, not even an announcement.
SQUARE = [(0, 1), (1, 2), (0, 3), (2, 3)]

def test_a_batch_pushed_into_a_link_that_broke_goes_by_the_new_tree() -> None:
    sim = routed_sim(4, SQUARE, {2: {"a"}})
    sim.drop.add((0, 1))  # 1 crashed with the push on its way to it
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)
    sim.run(max_time=0.01)
    assert 2 not in delivered_to(sim, batch.id)
    routes = sim.routers[0].interest.routes  # type: ignore[union-attr]
    graph = routes.graph  # type: ignore[union-attr]
    ids = sim.ids
    graph[ids[0]].remove(ids[1])  # the graph takes the broken link out first (the node)
    graph[ids[1]].remove(ids[0])
    sim.unlink(0, 1)
    sim.apply(0, reroute(sim.routers[0], ids[1], sim.now))
    sim.run(max_time=0.1)
    assert 2 in delivered_to(sim, batch.id)
    assert receivers(sim, batch.id) == {2, 3}
    assert sim.routers[0].pushed.rerouted == 1
    # Told once: the next break sends nothing again.
    assert reroute(sim.routers[0], ids[1], sim.now) == []

def test_only_recent_batches_go_again_and_not_to_peers_that_had_them() -> None:
    sim = routed_sim(4, SQUARE, {2: {"a"}, 3: {"a"}})
    batch, body = routed(sim, 0, 1, "a")
    sim.publish(0, batch, body)  # pushed to 1 (toward 2) and to 3
    sim.run(max_time=0.01)
    ids = sim.ids
    graph = sim.routers[0].interest.routes.graph  # type: ignore[union-attr]
    graph[ids[0]].remove(ids[1])
    graph[ids[1]].remove(ids[0])
    sim.unlink(0, 1)
    # The new tree goes by 3, which had it from 0 already: nothing goes again.
    assert reroute(sim.routers[0], ids[1], sim.now) == []

    late = routed_sim(4, SQUARE, {2: {"a"}})
    late.drop.add((0, 1))
    old, obody = routed(late, 0, 1, "a")
    late.publish(0, old, obody)
    late.run(max_time=0.01)
    late.now += REROUTE_AGE + 0.1  # the break is seen too late: the batch is not sent
    graph = late.routers[0].interest.routes.graph  # type: ignore[union-attr]
    graph[ids[0]].remove(ids[1])
    graph[ids[1]].remove(ids[0])
    late.unlink(0, 1)
    assert reroute(late.routers[0], ids[1], late.now) == []


async def test_the_last_message_of_a_topic_pushed_into_a_crash_still_arrives(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Real nodes in a ring, 0-1-2-3-4-5-0, 2 subscribed: 0's tree to 2 goes by 1. 1
    stops reading, 0 publishes (the push waits unread at 1), 1 crashes: the last
    message of the topic goes again by 5, 4, 3 (no later one would show the gap)."""
    net = MemoryNetwork()
    edges = ring_edges(6)
    with trio.fail_after(120):
        async with interest_mesh(short_tmp, edges, 6, net) as nodes:
            got = await ring_first_message(nodes, edges)
            await trio.sleep(1)  # "0" too old to go again
            net.sim.freeze(2)  # node 1 (the network numbers nodes from 1)
            nodes[0].publish("a", b"1")
            await trio.sleep(0.05)
            nodes[1].kill()
            with trio.move_on_after(5):
                await wait_until(lambda: len(got) == 2)
            assert got == [b"0", b"1"]
            assert nodes[0].router.pushed.rerouted == 1
