"""Membership over real nodes on a memory network, in virtual time: joining through one
seed, tag updates, leaving, the failure detector (docs/protocol.md, "Membership";
docs/failures.md)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, SimNet, link_count, start_memory_mesh, wait_until
from p2pnode.wire.messages import Bye, encode_message

from .test_resilience import connected


def states(node: Node) -> dict[bytes, str]:
    """What ``node`` says of every member: node id -> state."""
    return {m.node_id: m.state for m in node.membership.members()}


def knows_all(nodes: list[Node], live: list[Node]) -> bool:
    """Every node of ``live`` lists every node of ``live`` as alive."""
    want = {n.node_id for n in live}
    return all({nid for nid, s in states(n).items() if s == "alive"} >= want for n in live)


def star(n: int) -> list[tuple[int, int]]:
    """Every node but 0 is given node 0 as its one seed."""
    return [(i, 0) for i in range(1, n)]


async def joined(nursery: trio.Nursery, n: int, **overrides: object) -> list[Node]:
    """``n`` nodes given node 0 as their seed, once every one knows every other."""
    overrides = {"degree_low": 2, "degree_high": 4, "peer_exchange": True, **overrides}
    nodes = await start_memory_mesh(nursery, star(n), n, **overrides)
    await wait_until(lambda: knows_all(nodes, nodes))
    return nodes


async def test_nodes_joining_through_one_seed_learn_every_member(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nodes = await joined(nursery, 6)
            assert trio.current_time() - start < 5
            for node in nodes:
                assert len(node.membership.members()) == 6
                me = [m for m in node.membership.members() if m.this_node]
                assert [m.node_id for m in me] == [node.node_id]
            # Peer exchange: each node links to members it was never told about, up to
            # degree_low (2), although it was given one seed.
            await wait_until(lambda: all(link_count(n) >= 2 for n in nodes))
            assert trio.current_time() - start < 10
            nursery.cancel_scope.cancel()


async def test_a_tag_change_and_a_leave_reach_every_member(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await joined(nursery, 4)
            events: list[tuple[str, str]] = []
            nodes[1].membership.add_listener(lambda kind, m: events.append((kind, m.name)))
            nodes[3].membership.set_tags({"role": "display"})

            def tags_seen() -> bool:
                return all(m.tags == {"role": "display"} for n in nodes
                           for m in n.membership.members() if m.node_id == nodes[3].node_id)

            await wait_until(tags_seen)
            assert ("member_update", "n3") in events
            await nodes[2].stop()
            await wait_until(lambda: all(states(n)[nodes[2].node_id] == "left"
                                         for n in (nodes[0], nodes[1], nodes[3])))
            assert ("member_left", "n2") in events
            assert ("member_dead", "n2") not in events
            nursery.cancel_scope.cancel()


async def test_a_frozen_node_is_declared_dead_within_5_s_and_back_when_it_wakes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await joined(nursery, 6, network=net, degree_low=3, degree_high=5)
            await wait_until(lambda: all(link_count(n) >= 3 for n in nodes))
            await trio.sleep(5)  # settle
            victim, others = nodes[5], nodes[:5]
            net.sim.freeze(victim.config.listen_port)  # like SIGSTOP: it sends nothing
            frozen_at = trio.current_time()
            await wait_until(lambda: all(states(n)[victim.node_id] == "dead" for n in others))
            took = trio.current_time() - frozen_at
            assert took <= 5.0, took
            # No one else was suspected, let alone declared dead.
            for node in others:
                assert all(s == "alive" for nid, s in states(node).items()
                           if nid != victim.node_id)
            # Woken up, it hears it is dead and refutes: alive again everywhere.
            net.sim.thaw(victim.config.listen_port)
            await wait_until(lambda: knows_all(nodes, nodes))
            assert trio.current_time() - frozen_at - took < 5
            assert victim.membership.refutations >= 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("silence", "refuted"), [(2.0, 0), (2.6, 1)])
async def test_a_node_silent_for_a_short_while_is_suspected_at_most_never_dead(
    autojump_clock: trio.testing.MockClock, silence: float, refuted: int,
) -> None:
    """Silent 2 s: not even suspected. Silent 2.6 s: suspected, and it refutes when it
    hears so (a higher incarnation), before the suspicion times out."""
    net = MemoryNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await joined(nursery, 6, network=net, degree_low=3, degree_high=5)
            await wait_until(lambda: all(link_count(n) >= 3 for n in nodes))
            await trio.sleep(5)
            slow, others = nodes[5], nodes[:5]
            events: list[str] = []
            for node in others:
                node.membership.add_listener(lambda kind, _m: events.append(kind))
            net.sim.freeze(slow.config.listen_port)
            await trio.sleep(silence)
            net.sim.thaw(slow.config.listen_port)
            await trio.sleep(15)
            assert "member_dead" not in events
            assert events.count("member_suspect") == (5 if refuted else 0)
            assert knows_all(nodes, nodes)
            assert slow.membership.refutations == refuted
            nursery.cancel_scope.cancel()


async def test_a_full_seed_names_others_to_link_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every node is given the same seed, which takes 4 links at most: the others are
    refused with ``too_many_links`` and the members to try instead (peer exchange);
    all end up knowing each other in one connected mesh, and the mesh stays connected
    when the seed is killed."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, star(8), 8, max_links=4, degree_low=2,
                                            degree_high=3, peer_exchange=True)
            alarms: list[tuple[str, bytes]] = []
            for node in nodes:
                node.membership.add_listener(
                    lambda kind, m: alarms.append((kind, m.node_id))
                    if kind in ("member_suspect", "member_dead") else None)
            await wait_until(lambda: knows_all(nodes, nodes) and connected(nodes))
            assert nodes[0].links is not None
            assert nodes[0].links.stats.refused["too_many_links"] > 0
            assert sum(n.links.stats.px_received for n in nodes if n.links) > 0
            # Refused and pruned links are no sign of failure: nobody was suspected.
            await trio.sleep(10)
            assert alarms == []
            nodes[0].kill()
            await wait_until(lambda: all(states(n)[nodes[0].node_id] == "dead"
                                         for n in nodes[1:]))
            assert connected(nodes[1:])
            await trio.sleep(30)
            assert connected(nodes[1:])
            assert knows_all(nodes[1:], nodes[1:])
            nursery.cancel_scope.cancel()


async def test_the_periodic_hash_repairs_a_missed_update(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A record that reached one node without being flooded (as if lost on the way) is
    spread by the periodic sync: a hash that differs, then digests both ways."""
    from p2pnode.members.records import MemberBody, sign_member
    from p2pnode.testing import make_identity, wait_linked
    from p2pnode.wire.messages import Members

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, [(0, 1), (1, 2)], 3,
                                            member_sync_interval=5.0)
            await wait_linked(nodes, [(0, 1), (1, 2)])
            await wait_until(lambda: knows_all(nodes, nodes))
            other = make_identity(random.Random(77))
            record = sign_member(other, MemberBody("x", ["mem:99"], 6, "open", {}, 1))
            nodes[0].membership.receive(Members([record]), b"\x01" * 16, trio.current_time())
            nodes[0].membership.outbox.clear()  # not flooded
            sent = sum(n.members_glue.stats.bytes_sent for n in nodes)
            await wait_until(lambda: other.node_id in states(nodes[2]))
            assert sum(n.members_glue.stats.bytes_sent for n in nodes) - sent < 4000
            nursery.cancel_scope.cancel()


def test_the_detector_timings_script_reports_its_figures() -> None:
    """scripts/detector_timings.py (the figures of docs/failures.md), in a small run."""
    import sys
    from pathlib import Path

    from .benchrun import run_json

    script = Path(__file__).resolve().parent.parent / "scripts" / "detector_timings.py"
    report = run_json([sys.executable, str(script), "--nodes", "4", "--runs", "1",
                       "--pause", "2.0", "--json"], "detector_timings", 120)
    assert report["nodes"] == 4
    assert 1.5 < report["frozen_dead_after_s"]["max"] <= 5.0
    assert report["paused"] == [{"pause_s": 2.0, "runs_suspected": 0, "dead_events": 0}]


async def test_only_a_broken_link_the_peer_had_taken_starts_a_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A link that ends without a Bye makes its node probe the peer only if the peer had
    taken the link (a Ping, a Pong or gossip came: ``PeerLink.heard``) and the link
    broke (not refused, pruned or closed for misbehaviour): a full seed's late refusals
    of joiners, which can end as ``broken`` on the joiner's side, accuse nobody."""
    import dataclasses

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b, _c = await start_memory_mesh(nursery, [(1, 0), (2, 0)], 3)
            await wait_until(lambda: link_count(a) == 2)
            assert a.links is not None
            link = a.links.links[b.node_id]
            await wait_until(lambda: all(lk.heard for lk in a.links.links.values()))
            detector = a.membership.detector
            glue = a.members_glue
            for heard, reason in ((False, "broken"), (True, "too_many_links"),
                                  (True, "pruned_by_peer"), (True, "protocol_error")):
                glue.link_changed(dataclasses.replace(link, heard=heard, close_reason=reason),
                                  False)
                assert detector.probes_sent == 0, (heard, reason)
            glue.link_changed(dataclasses.replace(link, heard=True, close_reason="broken"),
                              False)
            assert detector.probes_sent == 1
            nursery.cancel_scope.cancel()


async def test_a_pruned_peer_that_writes_as_the_link_closes_reads_the_bye(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The pruning node sends Bye("pruned") and closes; the pruned one writes just then
    (its write fails: the other end is closed) while the Bye is still on its way (50 ms
    latency). It still reads the Bye first: ``pruned_by_peer``, no probe of the pruner,
    no suspicion. Before, the failed write ended the link as ``broken`` at once and the
    pruned node probed the pruner (issue 18's join: most false suspicions)."""
    net = MemoryNetwork(sim=SimNet(latency=lambda: 0.05))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_memory_mesh(nursery, [(1, 0), (2, 0), (2, 1)], 3,
                                              network=net)
            assert a.links is not None
            assert b.links is not None
            await wait_until(lambda: link_count(a) == 2 and link_count(b) == 2)
            await trio.sleep(2)  # every link heard: Pings both ways
            a.links.links[b.node_id].close("pruned", encode_message(Bye("pruned")))
            await wait_until(lambda: b.node_id not in a.links.links)  # type: ignore[union-attr]
            b.links.links[a.node_id].send(encode_message(b.membership.summary()))
            await wait_until(lambda: a.node_id not in b.links.links)  # type: ignore[union-attr]
            await trio.sleep(3)
            assert b.links.stats.closed["pruned_by_peer"] == 1
            assert b.links.stats.closed["broken"] == 0
            assert b.membership.detector.probes_sent == 0
            assert all(m.state == "alive" for n in (a, b, c) for m in n.membership.members())
            nursery.cancel_scope.cancel()
