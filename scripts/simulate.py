#!/usr/bin/env python3
"""Simulate a mesh of p2pnode nodes in one process, in virtual time.

Runs N nodes of the real node code (``p2pnode.node.Node``) over an in-memory
network (``p2pnode.testing.MemoryNetwork``, plaintext links: no TLS) under
trio's ``MockClock`` with ``autojump_threshold=0``: time jumps whenever every
task waits, so a run of many virtual seconds takes only the CPU time the nodes
really need, and the same ``--seed`` gives the same figures (trio's scheduler
is seeded too).

Phases (virtual time): start the nodes and wait until the mesh is linked;
publish ``--messages`` messages from ``--publishers`` nodes, evenly spread over
``--window`` seconds, one message per signed batch (each publish happens at its
own virtual instant and the publisher then yields, so the node's flusher signs
it alone); optionally crash nodes (``--churn``, ``--rejoin``) and split the
network in two (``--partition``) during the window; then wait until every
message reached every node that can receive it, or ``--drain`` seconds.

Figures (``--json`` prints them as one object):

- ``delivery_ratio``: deliveries / possible deliveries. A message can be delivered
  to each node that was running from the moment it was published to the end of
  the run ("eligible"); that includes its origin, whose local delivery (hops 0)
  counts. Deliveries to nodes that were not eligible (crashed later, or restarted
  after the publish) are counted apart in ``deliveries_other``.
- ``copies_per_delivery``: message copies received from peers by all nodes, plus
  the origin's own local copy, divided by deliveries: each batch copy a node reads
  off a link counts as many copies as the batch has messages (whether it was new or
  a duplicate). 1.0 is perfect; flooding gives about the mean degree.
- ``hops_*``: links travelled by each delivered copy (0 at the origin).
- ``latency_*_ms``: virtual time from publish to delivery, over all deliveries
  (origins included, at 0 ms).

``--topology join`` runs another scenario, membership (issue 18): every node starts
knowing only ``--seeds`` seed(s); it reports ``membership_converged_s``, the
membership traffic once converged, whether the mesh stays connected when the seeds
are killed, and (with ``--loss``) false suspicions and deaths. See ``simjoin.py``.

``--topics T`` spreads the messages over topics ``t0..t{T-1}`` (issue 19): each node's
local app subscribes to each topic with probability ``--subscribe-fraction`` (through the
node's API server, so the node knows it), each message goes to a random topic. Then
``delivery_ratio`` counts only the nodes interested in a message, and the figures gain
``copies_per_message``, ``uninterested_copies_per_message`` (copies read by nodes
without a matching subscription) and ``interested_per_message``. ``--compare tree,flood``
runs the same seeded scenario once per gossip mode (any mode the node takes) and prints
the figures side by side. See ``simtopics.py``.

Usage: python scripts/simulate.py [--nodes 50] [--topology random] [--json] ...
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import random
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # simjoin, beside this script

import simcauses
import simtopics
import simtrace
from simjoin import JoinSimulation, add_join_arguments
from simjoin import human as join_human

from p2pnode import PROTOCOL_VERSION
from p2pnode.config import NodeConfig
from p2pnode.discovery import DiscoveredPeer
from p2pnode.net import PeerLink
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    SimNet,
    make_identity,
    memory_config,
    random_regular_edges,
    ring_edges,
    share_signature_checks,
)
from p2pnode.wire import Batch, BatchBody, Gossip, GossipMessage, IHave

TOPOLOGIES = ("random", "ring", "grid", "small-world", "discovery", "join")
TOPIC = "sim"
DEFAULT_DEGREE = 6
#: Per link, one way: 1 ms plus up to 1 ms of jitter, a LAN of switches and Wi-Fi.
#: (0 would make every delivery instantaneous in virtual time: no latency figures, and
#: a plot whose colours and delivery curve show nothing.)
DEFAULT_LATENCY_MS = 1.0
DEFAULT_JITTER_MS = 1.0
MAX_PAYLOAD = NodeConfig.max_payload


# -- topologies -------------------------------------------------------------------------


def grid_edges(n: int) -> list[tuple[int, int]]:
    """A square-ish grid (the last row may be short): links to the right and below."""
    side = max(1, math.ceil(math.sqrt(n)))
    edges = []
    for i in range(n):
        if (i + 1) % side and i + 1 < n:
            edges.append((i, i + 1))
        if i + side < n:
            edges.append((i, i + side))
    return edges


def small_world_edges(n: int, degree: int, seed: int, rewire: float = 0.2) -> list[tuple[int, int]]:
    """Watts-Strogatz: a ring lattice (each node linked to ``degree // 2`` neighbours on
    each side), then each non-ring edge rewired to a random node with probability
    ``rewire``. The ring itself stays, so the graph is connected."""
    rng = random.Random(seed)
    half = max(1, degree // 2)
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        for j in range(1, half + 1):
            a, b = i, (i + j) % n
            if a == b:
                continue
            if j > 1 and rng.random() < rewire:
                for _ in range(10):
                    b = rng.randrange(n)
                    if b != a and (min(a, b), max(a, b)) not in pairs:
                        break
            if a != b:
                pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def build_edges(topology: str, n: int, degree: int, seed: int) -> list[tuple[int, int]]:
    """The static links for ``topology`` (an empty list for ``discovery``)."""
    if n < 2 or topology == "discovery":
        return []
    if topology == "random":
        return random_regular_edges(n, degree, seed)
    if topology == "ring":
        return ring_edges(n) if n > 2 else [(0, 1)]
    if topology == "grid":
        return grid_edges(n)
    if topology == "small-world":
        return small_world_edges(n, degree, seed)
    raise ValueError(f"unknown topology {topology!r}")


# -- the network ----------------------------------------------------------------------


class PartitionNet(SimNet):
    """A ``SimNet`` that can also split the nodes into two sides: while split, nothing
    crosses between the sides (as ``cut_path`` for every pair across, in O(1))."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.side: dict[int, int] = {}
        self.split = False

    def blocked(self, reader: int, writer: int) -> bool:
        if self.split and self.side.get(reader, 0) != self.side.get(writer, 0):
            return True
        return super().blocked(reader, writer)

    def heal(self) -> None:
        self.split = False
        self._changed.unpark_all()


@dataclass
class Options:
    nodes: int = 50
    topology: str = "random"
    degree: int = 6
    latency_ms: float = 1.0  # DEFAULT_LATENCY_MS
    jitter_ms: float = 1.0  # DEFAULT_JITTER_MS
    messages: int = 20
    publishers: int = 1
    window: float = 1.0
    payload: int = 100
    churn: float = 0.0
    rejoin: bool = False
    rejoin_after: float = 1.0
    partition: float = 0.0
    drain: float = 30.0
    max_hops: int = 32
    gossip: str = "tree"
    topics: int = 0  # --topics (simtopics.py): 0 is one topic, TOPIC, that every node takes
    subscribe_fraction: float = 0.0
    compare: tuple[str, ...] = ()  # gossip modes to run one after the other
    settle: float = 0.0  # virtual seconds from the linked mesh to the first publish
    extra: dict[str, Any] = field(default_factory=dict)  # more NodeConfig settings
    gc_freeze: bool = True
    ping_interval: float = 5.0
    link_timeout: float = 15.0
    seed: int = 0
    plot: str | None = None
    trace: str | None = None  # --trace FILE.json (simtrace.py)
    # --topology join (simjoin.py)
    seeds: int = 1
    loss: float = 0.0
    loss_mode: str = "drop"
    converge_max: float = 120.0
    measure: float = 60.0
    after_kill: float = 30.0


@dataclass
class Stats:
    """What the run records (all times virtual)."""

    pub_time: dict[bytes, float] = field(default_factory=dict)  # msg key -> publish time
    pub_order: list[bytes] = field(default_factory=list)
    pub_topic: dict[bytes, str] = field(default_factory=dict)  # msg key -> topic
    pub_batch: dict[bytes, bytes] = field(default_factory=dict)  # msg key -> batch key
    deliveries: int = 0
    deliveries_other: int = 0
    duplicate_deliveries: int = 0
    hops: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    first_receipt: dict[bytes, dict[int, float]] = field(default_factory=dict)
    batch_copies: Counter[bytes] = field(default_factory=Counter)  # batch key -> copies read
    batch_items: dict[bytes, int] = field(default_factory=dict)  # batch key -> messages
    batch_topics: dict[bytes, tuple[str, ...]] = field(default_factory=dict)  # their topics
    delivered_keys: set[tuple[int, bytes]] = field(default_factory=set)
    announcements: int = 0  # batch announcements (IHave entries) received
    last_delivery: float = 0.0  # time of the last eligible delivery


class Simulation:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        lat_rng = random.Random(opts.seed + 1)
        base, jitter = opts.latency_ms / 1000, opts.jitter_ms / 1000
        latency = ((lambda: base + lat_rng.uniform(0, jitter)) if jitter
                   else (lambda: base))
        self.sim = PartitionNet(latency=latency)
        self.net = MemoryNetwork(sim=self.sim)
        self.edges = build_edges(opts.topology, opts.nodes, opts.degree, opts.seed)
        deg = Counter[int]()
        for a, b in self.edges:
            deg[a] += 1
            deg[b] += 1
        self.max_static_degree = max(deg.values(), default=0)
        self.nodes: list[Node] = []
        self.identities = [make_identity(random.Random(opts.seed + i))
                           for i in range(opts.nodes)]
        self.index = {ident.node_id: i for i, ident in enumerate(self.identities)}
        # Node i is eligible for a message published at t if it was up at t and stays up:
        # up_since[i] is the start of its current run, None while it is down.
        self.up_since: list[float | None] = [None] * opts.nodes
        self.stats = Stats()
        self.expected = 0  # possible deliveries so far
        # Per node, while it is up: messages published since it came up, and how many of
        # them it received. A crash moves its share out of the figures (not eligible).
        self.node_expected = [0] * opts.nodes
        self.node_delivered = [0] * opts.nodes
        self.snapshot: list[tuple[int, int]] = []  # links when the first message left
        self.crashed = 0
        self.rejoined = 0
        self.wall_linked = 0.0
        self.healed_at: float | None = None
        #: With --topics: subscriptions, message topics, copies per node (simtopics.py).
        self.topics = simtopics.Topics(opts) if opts.topics else None
        #: With --topics: why each copy was sent (simcauses.py).
        self.causes = simcauses.Causes() if opts.topics else None
        #: The events of the run's batches, for --trace (simtrace.py).
        self.trace = simtrace.Trace()
        self.links_start: dict[int, list[int]] = {}
        self.missed_at_end: list[dict[str, Any]] = []

    # -- nodes ---------------------------------------------------------------------

    def config(self, i: int) -> NodeConfig:
        o = self.opts
        over: dict[str, Any] = {
            "seed": o.seed * 1_000_003 + i,
            "ping_interval": o.ping_interval, "link_timeout": o.link_timeout,
            "slow_peer_timeout": max(3.0, o.ping_interval * 3), "max_hops": o.max_hops,
            "gossip": o.gossip,
        }
        if o.gossip == "interest":  # the trees need every node's link list
            over.update(mesh_interval=30.0, mesh_min_interval=0.5)
        over.update(o.extra)
        if o.topology == "discovery":
            low = max(1, min(o.degree, o.nodes - 1))
            high = max(low, o.degree + o.degree // 2)
            over.update(degree_low=low, degree_high=high, max_links=max(16, high + 4),
                        max_discovered=max(1024, o.nodes))
        else:
            # Static links: room for every edge, so degree management never refuses or
            # prunes one (the inbound end of a static edge is not marked static).
            cap = max(16, self.max_static_degree + 2)
            over.update(degree_low=1, degree_high=cap, max_links=cap,
                        peers=tuple(("mem", j + 1) for a, j in self.edges if a == i))
        return memory_config(i, **over)

    async def start_node(self, nursery: trio.Nursery, i: int) -> Node:
        topics = self.topics
        node = Node(self.config(i), transport=self.net.transport(),
                    identity=self.identities[i], api=topics is not None)
        node.on_deliver.append(self._deliver_callback(i))
        node._on_gossip = self._gossip_wrapper(node, i)  # type: ignore[method-assign]
        if topics is not None:
            topics.prepare(node)
        if self.causes is not None:
            self.causes.watch(node.router)
        await nursery.start(node.run)
        if topics is not None:
            topics.subscribe(node, i)
        self.up_since[i] = trio.current_time()
        self.sim.side[i + 1] = 0 if i < self.opts.nodes // 2 else 1
        if i < len(self.nodes):
            self.nodes[i] = node
        else:
            self.nodes.append(node)
        return node

    def tell_all(self, i: int) -> None:
        """As mDNS would: tell node ``i`` about every other node, and them about it."""
        me = self.nodes[i]
        for j, other in enumerate(self.nodes):
            if j == i or self.up_since[j] is None:
                continue
            me.discovering.found(self.found(j))
            other.discovering.found(self.found(i))

    def found(self, j: int) -> DiscoveredPeer:
        node = self.nodes[j]
        return DiscoveredPeer(node.node_hex, node.config.name, (("mem", j + 1),),
                              PROTOCOL_VERSION, node.network_tag)

    # -- measurement hooks -----------------------------------------------------------

    def _deliver_callback(self, i: int) -> Any:
        st = self.stats
        topics = self.topics
        wants = topics.wants if topics is not None else lambda _j, _topic: True

        def on_deliver(msg: Gossip) -> None:
            key = msg.origin + msg.id
            now = trio.current_time()
            topic = msg.topic
            if msg.hops == 0 and self.index.get(msg.origin) == i:
                st.pub_time[key] = now
                st.pub_order.append(key)
                st.pub_topic[key] = topic
                for j, s in enumerate(self.up_since):
                    if s is not None and wants(j, topic):
                        self.node_expected[j] += 1
                        self.expected += 1
                if topics is not None and wants(i, topic):
                    topics.local_copies += 1
            t0 = st.pub_time.get(key)
            if t0 is None or not wants(i, topic):  # not one of ours, or not for node i
                return
            if (i, key) in st.delivered_keys:
                st.duplicate_deliveries += 1
                return
            st.delivered_keys.add((i, key))
            since = self.up_since[i]
            if since is not None and since <= t0:
                st.deliveries += 1
                self.node_delivered[i] += 1
                st.hops.append(msg.hops)
                st.latency.append(now - t0)
                st.last_delivery = now
            else:
                st.deliveries_other += 1
            if len(st.pub_order) and key == st.pub_order[0]:
                st.first_receipt.setdefault(key, {})[i] = now - t0

        return on_deliver

    def _gossip_wrapper(self, node: Node, i: int) -> Any:
        inner = node._on_gossip
        copies = self.stats.batch_copies
        count_at = self.topics.counter(i) if self.topics is not None else None

        st = self.stats
        causes, me, seen = self.causes, node.node_id, node.router.seen
        trace, index = self.trace, self.index

        def on_gossip(link: PeerLink, msgs: list[GossipMessage]) -> None:
            now = trio.current_time()
            src = index.get(link.peer_id, -1)
            for msg in msgs:
                trace.received(src, i, msg, now)
                if type(msg) is Batch:
                    copies[msg.origin + msg.id] += 1
                    if count_at is not None:
                        count_at(msg.origin + msg.id)
                    if causes is not None:
                        key = msg.origin + msg.id
                        causes.received(key, link.peer_id, me,
                                        key in seen or msg.origin == me)
                elif type(msg) is IHave:
                    st.announcements += len(msg.batches)
            inner(link, msgs)

        return on_gossip

    def _watch_publisher(self, node: Node) -> None:
        """Record how many messages each batch ``node`` publishes carries."""
        router = node.router
        inner = router.keep_new  # every batch made here is kept (Router.publish too)
        items = self.stats.batch_items
        topics = self.stats.batch_topics
        pub_batch = self.stats.pub_batch
        trace = self.trace

        def keep_new(batch: Batch, body: BatchBody, now: float) -> None:
            # Only the batches of the run's messages: not the node's own link lists
            # ($mesh, sent again whenever a link opens or breaks) and other reserved
            # topics, which are not message copies.
            if not any(item.topic.startswith("$") for item in body.items):
                key = batch.origin + batch.id
                items[key] = len(body.items)
                topics[key] = tuple(item.topic for item in body.items)
                for item in body.items:
                    pub_batch[batch.origin + item.id] = key
                trace.published(key, body, now)
            inner(batch, body, now)

        router.keep_new = keep_new  # type: ignore[method-assign]

    # -- phases ------------------------------------------------------------------------

    async def wait_mesh(self) -> None:
        o = self.opts
        nodes = self.nodes
        if o.topology == "discovery":
            low = nodes[0].config.degree_low
            high = nodes[0].config.degree_high

            def ready() -> bool:
                # Every node in [degree_low, degree_high]: dialled up, pruned down.
                return all(n.links is not None and low <= len(n.links.links) <= high
                           for n in nodes)
        else:
            pairs = [(a, b) for a, b in self.edges]

            def ready() -> bool:
                for a, b in pairs:
                    la = nodes[a].links
                    if la is None or nodes[b].node_id not in la.links:
                        return False
                    lb = nodes[b].links
                    if lb is None or nodes[a].node_id not in lb.links:
                        return False
                return True

        with trio.move_on_after(120):
            while not ready():  # noqa: ASYNC110 - virtual time
                await trio.sleep(0.1)

    def take_snapshot(self) -> None:
        seen: set[tuple[int, int]] = set()
        for i, node in enumerate(self.nodes):
            if node.links is None or self.up_since[i] is None:
                continue
            for pid in node.links.links:
                j = self.index[pid]
                seen.add((min(i, j), max(i, j)))
        self.snapshot = sorted(seen)

    async def publish_all(self, publishers: list[int]) -> None:
        o = self.opts
        start = trio.current_time()
        payload = bytes(o.payload)
        for k in range(o.messages):
            await trio.sleep_until(start + o.window * k / max(1, o.messages))
            i = publishers[k % len(publishers)]
            if self.up_since[i] is None:
                continue
            topic = self.topics.message_topics[k] if self.topics is not None else TOPIC
            self.nodes[i].publish(topic, payload)
            if k == 0:
                self.take_snapshot()
            await trio.lowlevel.checkpoint()  # let the flusher sign this message alone

    async def churn(self, nursery: trio.Nursery, victims: list[int]) -> None:
        o = self.opts
        start = trio.current_time()
        for k, i in enumerate(victims):
            await trio.sleep_until(start + o.window * (k + 0.5) / len(victims))
            self.nodes[i].kill()
            self.up_since[i] = None
            self.trace.crashed(i, trio.current_time())
            self.expected -= self.node_expected[i]
            self.stats.deliveries -= self.node_delivered[i]
            self.stats.deliveries_other += self.node_delivered[i]
            self.node_expected[i] = self.node_delivered[i] = 0
            if o.rejoin:  # its next run may receive them again (history): not duplicates
                self.stats.delivered_keys = {k for k in self.stats.delivered_keys if k[0] != i}
            self.crashed += 1
            if o.rejoin:
                nursery.start_soon(self.rejoin, nursery, i)

    async def rejoin(self, nursery: trio.Nursery, i: int) -> None:
        await trio.sleep(self.opts.rejoin_after)
        await self.start_node(nursery, i)
        self.rejoined += 1
        if self.opts.topology == "discovery":
            self.tell_all(i)

    async def partition(self) -> None:
        self.sim.split = True
        await trio.sleep(self.opts.partition)
        self.sim.heal()
        self.healed_at = trio.current_time()

    async def run(self) -> dict[str, Any]:
        o = self.opts
        t_start = trio.current_time()
        if o.gc_freeze:  # fewer, larger young collections (and see below)
            gc.set_threshold(100_000, 50, 1000)
        async with trio.open_nursery() as nursery:
            for i in range(o.nodes):
                await self.start_node(nursery, i)
                if o.gc_freeze and i % 100 == 99:
                    # The nodes' long-lived state: out of the collector's way while the
                    # mesh links (150 nodes, interest mode: the setup took 7 % less).
                    gc.collect()
                    gc.freeze()
            if o.topology == "discovery":
                for i, node in enumerate(self.nodes):
                    for j in range(o.nodes):
                        if j != i:
                            node.discovering.found(self.found(j))
            await self.wait_mesh()
            if o.settle:  # member records (interests under --gossip interest) spread
                await trio.sleep(o.settle)
            if o.gc_freeze:
                # Thousands of long-lived objects make each full collection slow (profiled:
                # a third of the run); keep them out of the collector's way.
                gc.collect()
                gc.freeze()
                gc.set_threshold(100_000, 50, 1000)  # fewer, larger young collections
            t_linked = trio.current_time()
            self.wall_linked = time.perf_counter()
            links_at_start = sum(len(n.links.links) for n in self.nodes if n.links) // 2
            self.links_start = self.links_now()
            order = list(range(o.nodes))
            self.rng.shuffle(order)
            publishers = order[: max(1, min(o.publishers, o.nodes))]
            for i in publishers:
                self._watch_publisher(self.nodes[i])
            others = order[len(publishers):]
            victims = others[: round(o.churn * o.nodes)]
            t_pub = trio.current_time()
            async with trio.open_nursery() as phase:
                phase.start_soon(self.publish_all, publishers)
                if victims:
                    phase.start_soon(self.churn, nursery, victims)
                if o.partition > 0:
                    phase.start_soon(self.partition)
            # Drain: wait until every possible delivery happened, at most --drain seconds.
            with trio.move_on_after(o.drain):
                while (self.stats.deliveries < self.expected  # noqa: ASYNC110
                       or (o.rejoin and self.rejoined < self.crashed)):
                    await trio.sleep(0.01)
            t_end = trio.current_time()
            self.missed_at_end = self.missed()  # while the nodes still run (their views)
            if o.trace:
                self.trace.write(o.trace, self.missed_at_end, self.links_start,
                                 self.links_now())
            nursery.cancel_scope.cancel()
        return self.summary(links_at_start, t_linked - t_start, t_end - t_pub)

    # -- results -----------------------------------------------------------------------

    def links_now(self) -> dict[int, list[int]]:
        """Each node's linked peers (node numbers), as it has them now."""
        return {i: sorted(self.index[p] for p in n.links.links if p in self.index)
                for i, n in enumerate(self.nodes)
                if n.links is not None and self.up_since[i] is not None}

    def missed(self) -> list[dict[str, Any]]:
        """The deliveries the figures count as possible that did not happen: a node
        interested in a message, up from its publication to now, that lacks it."""
        st = self.stats
        wants = self.topics.wants if self.topics is not None else lambda _j, _t: True
        out: list[dict[str, Any]] = []
        t_first = st.pub_time[st.pub_order[0]] if st.pub_order else 0.0
        reach: dict[int, set[int]] = {}  # origin -> the nodes a path of up nodes reaches
        for key in st.pub_order:
            t0, topic = st.pub_time[key], st.pub_topic.get(key, TOPIC)
            origin = self.index.get(key[:len(key) // 2], -1)
            for j, since in enumerate(self.up_since):
                if (since is not None and since <= t0 and wants(j, topic)
                        and (j, key) not in st.delivered_keys):
                    if origin not in reach:
                        reach[origin] = self.reachable(origin)
                    out.append({"node": j, "origin": origin,
                                "topic": topic, "published_s": round(t0 - t_first, 6),
                                "cut_off": j not in reach[origin],
                                **self.origin_view(origin, j, topic),
                                "message": key.hex(),
                                "batch": st.pub_batch.get(key, b"").hex()})
        return out

    def reachable(self, origin: int) -> set[int]:
        """The nodes a path of links between up nodes leads to from ``origin`` now."""
        links = self.links_now()
        seen, todo = {origin}, [origin]
        while todo:
            for j in links.get(todo.pop(), []):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    def origin_view(self, origin: int, j: int, topic: str) -> dict[str, Any]:
        """What ``origin`` thinks of node ``j`` now: its member state, whether it
        counts it as wanting ``topic``, and (interest mode) whether its view of the mesh
        has a way to it."""
        if origin < 0 or self.up_since[origin] is None:
            return {}
        node, target = self.nodes[origin], self.identities[j].node_id
        state = next((m.state for m in node.membership.members() if m.node_id == target),
                     None)
        return {"origin_state": state,
                "origin_counts_it": target in node.membership.interests.matching(topic),
                "origin_way": (node.routes.toward(target) is not None  # interest mode
                               if node.router.interest is not None else None)}

    def summary(self, links: int, link_time: float, run_time: float) -> dict[str, Any]:
        o, st = self.opts, self.stats
        # Copies received from peers, in messages (each batch copy x its message count),
        # plus each origin's own local copy.
        received = sum(n * st.batch_items.get(key, 1) for key, n in st.batch_copies.items()
                       if key in st.batch_items)
        copies = received + len(st.pub_order)
        deliveries = st.deliveries
        ratio = deliveries / self.expected if self.expected else 0.0

        def pct(values: list[float], q: float) -> float:
            if not values:
                return 0.0
            values = sorted(values)
            return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

        hops = [float(h) for h in st.hops]
        missed = self.missed_at_end  # (cut off: no path of up nodes from the origin)
        result = {
            "nodes": o.nodes, "topology": o.topology, "degree": o.degree, "seed": o.seed,
            "links": links, "max_hops": o.max_hops,
            "mean_degree": round(2 * links / o.nodes, 3) if o.nodes else 0.0,
            "messages": len(st.pub_order), "messages_requested": o.messages,
            "publishers": o.publishers,
            "possible_deliveries": self.expected, "deliveries": deliveries,
            "deliveries_other": st.deliveries_other,
            "duplicate_deliveries": st.duplicate_deliveries,
            "delivery_ratio": round(ratio, 6),
            "missed": [{k: m[k] for k in ("node", "origin", "topic", "published_s",
                                          "cut_off")}
                       for m in missed[:10]],
            "missed_cut_off": sum(m["cut_off"] for m in missed),
            "copies_received": copies,
            "copies_per_delivery": round(copies / deliveries, 4) if deliveries else 0.0,
            "gossip": o.gossip,
            "announcements_per_delivery": (round(st.announcements / deliveries, 4)
                                           if deliveries else 0.0),
            "heal_to_complete_s": (round(max(0.0, st.last_delivery - self.healed_at), 3)
                                   if self.healed_at is not None
                                   and deliveries == self.expected else None),
            "hops_p50": pct(hops, 0.5), "hops_max": max(hops, default=0.0),
            "hops_mean": round(statistics.fmean(hops), 3) if hops else 0.0,
            "latency_p50_ms": round(pct(st.latency, 0.5) * 1000, 3),
            "latency_p99_ms": round(pct(st.latency, 0.99) * 1000, 3),
            "latency_max_ms": round(max(st.latency, default=0.0) * 1000, 3),
            "crashed": self.crashed, "rejoined": self.rejoined,
            "partition_s": o.partition,
            "latency_ms": o.latency_ms, "jitter_ms": o.jitter_ms,
            "ping_interval": o.ping_interval, "link_timeout": o.link_timeout,
            "virtual_link_s": round(link_time, 3), "virtual_run_s": round(run_time, 3),
        }
        if self.topics is not None:  # copies split by interest (simtopics.py)
            result.update(topics=o.topics, subscribe_fraction=o.subscribe_fraction,
                          settle_s=o.settle, announcements_per_message=round(
                              st.announcements / len(st.pub_order), 4) if st.pub_order else 0.0)
            result.update(self.topics.figures(st.batch_topics, len(st.pub_order),
                                              self.expected, deliveries))
        if self.causes is not None:
            result.update(self.causes.figures(st.batch_items, len(st.pub_order)))
        return result


# -- entry points -------------------------------------------------------------------------


def run_simulation(opts: Options) -> tuple[dict[str, Any], Any]:
    """Run one simulation; returns the figures and the finished simulation."""
    import trio._core._run as trio_run

    # trio shuffles the order of runnable tasks with its own random source; seed it.
    trio_run._r.seed(opts.seed)
    sim: Any = Simulation(opts) if opts.topology != "join" else JoinSimulation(opts)
    threshold = gc.get_threshold()
    t0 = time.perf_counter()
    undo = share_signature_checks()
    try:
        result = trio.run(sim.run, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        undo()
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if getattr(sim, "topics", None) is not None:
            sim.topics.close()
    result["wall_seconds"] = round(time.perf_counter() - t0, 3)
    result["wall_setup_seconds"] = round(sim.wall_linked - t0, 3)  # start and link the mesh
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result, sim


def plot(sim: Simulation, result: dict[str, Any], path: str) -> None:
    """Draw the mesh coloured by first receipt of the first message, and the delivery
    curve over all messages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    st = sim.stats
    graph = nx.Graph()
    graph.add_nodes_from(range(sim.opts.nodes))
    graph.add_edges_from(sim.snapshot)
    first = st.first_receipt.get(st.pub_order[0], {}) if st.pub_order else {}
    n = sim.opts.nodes
    if n <= 3000:
        pos = nx.spring_layout(graph, seed=sim.opts.seed, iterations=50 if n > 500 else 100)
    else:
        pos = nx.random_layout(graph, seed=sim.opts.seed)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6.5))
    colours = [first.get(i, math.nan) * 1000 for i in range(n)]
    size = max(4, 300 / math.sqrt(max(1, n)))
    nx.draw_networkx_edges(graph, pos, ax=ax1, alpha=0.15, width=0.5)
    drawn = nx.draw_networkx_nodes(graph, pos, ax=ax1, node_size=size, node_color=colours,
                                   cmap="viridis")
    missed = [i for i in range(n) if i not in first]
    if missed:
        nx.draw_networkx_nodes(graph, pos, nodelist=missed, ax=ax1, node_size=size,
                               node_color="red")
    fig.colorbar(drawn, ax=ax1, label="first receipt of message 1 (virtual ms)")
    ax1.set_title(f"{result['topology']}: {_n(n, 'node')}, {_n(result['links'], 'link')}"
                  + (f", {len(missed)} missed (red)" if missed else ""))
    ax1.axis("off")
    lat = sorted(x * 1000 for x in st.latency)
    if lat:
        total = max(1, result["possible_deliveries"])
        ax2.plot(lat, [(k + 1) / total for k in range(len(lat))])
    ax2.set_xlabel("virtual time since publish (ms)")
    ax2.set_ylabel("fraction of possible deliveries")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.set_title(f"delivery curve: {_n(result['messages'], 'message')}, "
                  f"ratio {result['delivery_ratio']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, but not the None and False of flags that have none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="simulate.py", description=doc.split("\n\n")[0],
                                formatter_class=_HelpFormatter)
    p.add_argument("--nodes", type=int, default=50, metavar="N", help="nodes in the mesh")
    p.add_argument("--topology", choices=TOPOLOGIES, default="random",
                   help="how the nodes are linked (discovery: as mDNS would, each node "
                        "finds every other and keeps --degree links; join: every node "
                        "starts knowing only the --seeds, membership does the rest)")
    p.add_argument("--degree", type=int, default=None, metavar="N",
                   help="mean degree (random, small-world), target degree (discovery); "
                        f"default {DEFAULT_DEGREE}, or --nodes - 1 if that is less")
    p.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, metavar="MS",
                   help="one-way latency per link, ms (a LAN: switches, Wi-Fi)")
    p.add_argument("--jitter-ms", type=float, default=DEFAULT_JITTER_MS, metavar="MS",
                   help="extra latency per chunk, uniform in [0, jitter], ms")
    p.add_argument("--messages", type=int, default=20, metavar="N",
                   help="messages published in all")
    p.add_argument("--publishers", type=int, default=1, metavar="N",
                   help="nodes that publish (each a different node)")
    p.add_argument("--window", type=float, default=1.0, metavar="S",
                   help="virtual seconds over which the messages are published")
    p.add_argument("--payload", type=int, default=100, metavar="BYTES",
                   help="bytes per message")
    p.add_argument("--churn", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of nodes (never publishers) that crash during the window")
    p.add_argument("--rejoin", action="store_true", help="restart crashed nodes")
    p.add_argument("--rejoin-after", type=float, default=1.0, metavar="S",
                   help="virtual seconds a crashed node stays down (with --rejoin)")
    p.add_argument("--partition", type=float, default=0.0, metavar="S",
                   help="split the nodes into two halves for this many virtual seconds, "
                        "from the start of the window")
    p.add_argument("--drain", type=float, default=30.0, metavar="S",
                   help="wait at most this long (virtual s) after the window for deliveries")
    p.add_argument("--ping-interval", type=float, default=None, metavar="S",
                   help="keepalive ping interval, s (default 5.0; with --topology join "
                        "the node default, 1.0)")
    p.add_argument("--link-timeout", type=float, default=None, metavar="S",
                   help="silence before a link is dead, s (default 15.0; with --topology "
                        "join the node default, 3.0)")
    p.add_argument("--max-hops", type=int, default=32, metavar="N",
                   help="the nodes' hop limit, 1-255 (node default 32; a ring needs n/2)")
    p.add_argument("--gossip", default=None, metavar="MODE",
                   help="the nodes' gossip mode, any the node takes: tree (broadcast "
                        "trees, the default) or flood, ...")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="do not gc.freeze() the set-up mesh (slower at scale)")
    simtopics.add_topic_arguments(p)
    add_join_arguments(p)
    p.add_argument("--seed", type=int, default=0,
                   help="the same seed gives the same figures")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", metavar="FILE.json",
                   help="write each missed delivery (at most 20) with every copy, "
                        "announcement, graft and fetch of its batch, the node's links and "
                        "the crashes, to this file (simtrace.py)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the mesh and the delivery curve to this file (png, svg, pdf, "
                        "...; needs matplotlib and networkx: pip install '.[sim]')")
    return p


def problems(a: argparse.Namespace) -> list[str]:
    """What is impossible about these settings (nothing: an empty list)."""
    out: list[str] = []
    if a.nodes < 1:
        out.append(f"--nodes {a.nodes}: a mesh needs at least 1 node")
        return out
    out += join_problems(a)
    out += simtopics.topic_problems(a)
    if not 1 <= a.publishers <= a.nodes:
        out.append(f"--publishers {a.publishers}: each publisher is a different node, so "
                   f"it must be 1-{a.nodes} (--nodes {a.nodes})")
    if a.topology in ("random", "small-world", "discovery") and not (
            1 <= a.degree <= max(1, a.nodes - 1)):
        out.append(f"--degree {a.degree} with {a.nodes} nodes: a node links to 1-"
                   f"{max(1, a.nodes - 1)} others; use a smaller --degree or more --nodes")
    for flag, value in (("--latency-ms", a.latency_ms), ("--jitter-ms", a.jitter_ms),
                        ("--window", a.window), ("--rejoin-after", a.rejoin_after),
                        ("--partition", a.partition), ("--drain", a.drain)):
        if not (math.isfinite(value) and value >= 0):
            out.append(f"{flag} {value:g}: must be a number of at least 0")
    if not (math.isfinite(a.ping_interval) and a.ping_interval > 0):
        out.append(f"--ping-interval {a.ping_interval:g}: must be more than 0")
    elif not (math.isfinite(a.link_timeout) and a.link_timeout > a.ping_interval):
        out.append(f"--link-timeout {a.link_timeout:g}: must exceed --ping-interval "
                   f"({a.ping_interval:g})")
    elif 2 * (a.latency_ms + a.jitter_ms) / 1000 >= a.link_timeout:
        out.append(f"--latency-ms {a.latency_ms:g} + --jitter-ms {a.jitter_ms:g}: a round "
                   f"trip must take less than --link-timeout ({a.link_timeout:g} s), or "
                   "every link times out")
    if a.messages < 0:
        out.append(f"--messages {a.messages}: must be at least 0")
    if not 0 <= a.payload <= MAX_PAYLOAD:
        out.append(f"--payload {a.payload}: a message is 0-{MAX_PAYLOAD} bytes")
    if not 1 <= a.max_hops <= 255:
        out.append(f"--max-hops {a.max_hops}: must be 1-255")
    if not 0 <= a.churn < 1:
        out.append(f"--churn {a.churn:g}: a fraction of the nodes, at least 0 and below 1")
    elif round(a.churn * a.nodes) > a.nodes - min(a.publishers, a.nodes):
        out.append(f"--churn {a.churn:g} crashes {_n(round(a.churn * a.nodes), 'node')}, but only "
                   f"{a.nodes - a.publishers} are not publishers")
    if a.rejoin and round(a.churn * a.nodes) == 0:
        out.append("--rejoin restarts the nodes that --churn crashes: give --churn too")
    if a.partition > 0 and a.nodes < 2:
        out.append("--partition splits the nodes in two halves: it needs at least 2 nodes")
    return out


def join_problems(a: argparse.Namespace) -> list[str]:
    """What is impossible about the --topology join settings."""
    out: list[str] = []
    if not 1 <= a.seeds <= a.nodes:
        out.append(f"--seeds {a.seeds}: must be 1-{a.nodes} (--nodes {a.nodes})")
    if not 0 <= a.loss <= 0.5:
        out.append(f"--loss {a.loss:g}: a share of the frames, 0-0.5")
    for flag, value in (("--converge-max", a.converge_max), ("--measure", a.measure),
                        ("--after-kill", a.after_kill)):
        if not (math.isfinite(value) and value > 0):
            out.append(f"{flag} {value:g}: must be more than 0")
    if a.topology != "join":
        given = [flag for flag, value, default in (
            ("--seeds", a.seeds, 1), ("--loss", a.loss, 0.0),
            ("--loss-mode", a.loss_mode, "drop")) if value != default]
        if given:
            out.append(f"{', '.join(given)}: only with --topology join")
    elif a.plot is not None:
        out.append("--plot draws message delivery: not with --topology join")
    return out


def check_plot(path: str) -> str | None:
    """Why ``--plot path`` cannot be written (None: it can), checked before the run:
    matplotlib and networkx importable, a format matplotlib writes, a directory that
    exists and is writable."""
    try:
        import matplotlib
        import networkx  # noqa: F401
    except ImportError as exc:
        return (f"--plot needs matplotlib and networkx ({exc.name} is not installed): "
                "pip install 'p2pnode[sim]' (from a clone: pip install '.[sim]')")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = sorted(Figure().canvas.get_supported_filetypes())
    target = Path(path)
    if target.is_dir():
        return f"--plot {path}: that is a directory; name a file in it"
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in formats:
        return (f"--plot {path}: the file name must end in a format matplotlib writes: "
                f"{', '.join('.' + f for f in formats)}")
    folder = target.parent
    if not folder.is_dir():
        return f"--plot {path}: the directory {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) or (
            target.exists() and not os.access(target, os.W_OK)):
        return f"--plot {path}: cannot write there (permission denied)"
    return None


def parse_args(argv: list[str] | None = None) -> tuple[Options, bool]:
    """The options, checked: an impossible setting exits 2 with a message that names
    it (argparse's ``error``), before anything runs."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.degree is None:
        a.degree = max(1, min(DEFAULT_DEGREE, a.nodes - 1))
    if a.ping_interval is None:
        a.ping_interval = NodeConfig.ping_interval if a.topology == "join" else 5.0
    if a.link_timeout is None:
        a.link_timeout = NodeConfig.link_timeout if a.topology == "join" else 15.0
    found = problems(a)
    if a.plot is not None and not found:
        plot_problem = check_plot(a.plot)
        found += [plot_problem] if plot_problem else []
    if found:
        p.error("\n  ".join(found))
    opts = Options(
        nodes=a.nodes, topology=a.topology, degree=a.degree, latency_ms=a.latency_ms,
        jitter_ms=a.jitter_ms, messages=a.messages, publishers=a.publishers,
        window=a.window, payload=a.payload, churn=a.churn, rejoin=a.rejoin,
        rejoin_after=a.rejoin_after, partition=a.partition, drain=a.drain,
        max_hops=a.max_hops, ping_interval=a.ping_interval, link_timeout=a.link_timeout,
        seed=a.seed, gc_freeze=not a.no_gc_freeze, gossip=a.gossip or "tree",
        topics=a.topics, subscribe_fraction=a.subscribe_fraction, compare=a.compare,
        settle=a.settle,
        plot=a.plot, trace=a.trace, seeds=a.seeds, loss=a.loss, loss_mode=a.loss_mode,
        converge_max=a.converge_max, measure=a.measure, after_kill=a.after_kill,
    )
    return opts, a.json


def _n(count: int, noun: str) -> str:
    """``1 node``, ``2 nodes``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human(r: dict[str, Any]) -> str:
    topic_line = [simtopics.human_topics(r)] if "topics" in r else []
    return "\n".join([
        f"{_n(r['nodes'], 'node')}, {r['topology']} (degree {r['degree']}), "
        f"{_n(r['links'], 'link')} "
        f"(mean degree {r['mean_degree']}), seed {r['seed']}",
        f"{_n(r['messages'], 'message')} from {_n(r['publishers'], 'publisher')}: "
        f"{r['deliveries']}/{r['possible_deliveries']} deliveries, "
        f"ratio {r['delivery_ratio']:.4f}"
        + (f" (+{r['deliveries_other']} to nodes not up throughout)"
           if r["deliveries_other"] else ""),
        *topic_line,
        f"gossip {r['gossip']}: copies per delivery {r['copies_per_delivery']} "
        f"(+{r['announcements_per_delivery']} announcements), hops p50 {r['hops_p50']:g} "
        f"max {r['hops_max']:g}, latency p50 {r['latency_p50_ms']} ms "
        f"p99 {r['latency_p99_ms']} ms (virtual)",
        f"churn: {r['crashed']} crashed, {r['rejoined']} rejoined; partition "
        f"{r['partition_s']} s"
        + (f", every message everywhere {r['heal_to_complete_s']} s after the heal"
           if r["heal_to_complete_s"] is not None else ""),
        f"virtual: {r['virtual_link_s']} s to link, {r['virtual_run_s']} s to deliver; "
        f"wall {r['wall_seconds']} s, peak RSS {r['peak_rss_mb']} MB",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run and print; the exit status: 0, 1 if the plot could not be written after all,
    2 for refused settings (``parse_args``), 130 on Ctrl-C. No traceback for any."""
    opts, as_json = parse_args(argv)
    if opts.topology == "join":  # seeds killed on purpose: their redial warnings are noise
        logging.getLogger("p2pnode").addHandler(logging.NullHandler())
    sim = None
    try:
        if opts.compare:
            result = simtopics.run_compare(opts, run_simulation)
        else:
            result, sim = run_simulation(opts)
    except KeyboardInterrupt:
        print("simulate.py: interrupted", file=sys.stderr)
        return 130
    if opts.plot:
        try:
            plot(sim, result, opts.plot)
        except OSError as exc:  # checked before the run, but the disk may fill up
            print(f"simulate.py: error: --plot {opts.plot}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
    try:
        text = (join_human(result) if opts.topology == "join"
                else simtopics.human_compare(result, lambda r: human(r).split("\n")[0])
                if opts.compare else human(result))
        print(json.dumps(result) if as_json else text, flush=True)
    except BrokenPipeError:  # `| head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
