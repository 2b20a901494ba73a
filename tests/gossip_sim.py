"""Pure gossip simulations for the router tests: routers joined by FIFO links, no I/O,
a clock the test advances. Shared by tests/test_gossip.py and tests/test_tree.py."""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

from p2pnode.gossip.router import (
    Action,
    Deliver,
    Disconnect,
    Forward,
    GossipMode,
    Router,
    RouterConfig,
)
from p2pnode.gossip.signing import Verifier, make_batch
from p2pnode.testing import make_identity
from p2pnode.wire.messages import Batch, BatchBody, GossipMessage, Item

MAX_PAYLOAD = 1024
Edges = list[tuple[int, int]]

#: Identities of simulated nodes, made once (seeded: the same ids every run).
SIM_IDENTITIES = [make_identity(random.Random(1000 + i)) for i in range(40)]


def make_router(node_id: bytes, *, mode: GossipMode = "flood", peers: tuple[bytes, ...] = (),
                **cfg: Any) -> Router:
    """A router with test-sized bounds; ``peers`` are linked at time 0."""
    settings: dict[str, Any] = {"seen_max_entries": 1000, "seen_ttl": 60.0, "max_hops": 16}
    settings.update(cfg)
    r = Router(node_id, RouterConfig(mode=mode, seed=1, **settings))
    for p in peers:
        r.peer_up(p, 0.0)
    return r


class CountingVerifier:
    """``Verifier.verify`` that counts its calls."""

    def __init__(self) -> None:
        self.verifier = Verifier(MAX_PAYLOAD)
        self.calls = 0

    def __call__(self, batch: Batch) -> BatchBody:
        self.calls += 1
        return self.verifier.verify(batch)


def line(n: int) -> Edges:
    return [(i, i + 1) for i in range(n - 1)]


def ring(n: int) -> Edges:
    return [*line(n), (n - 1, 0)]


def random_connected(n: int, extra: int, seed: int) -> Edges:
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    edges = {tuple(sorted((order[i], order[rng.randrange(i)]))) for i in range(1, n)}
    while len(edges) < n - 1 + extra:
        a, b = rng.sample(range(n), 2)
        edges.add(tuple(sorted((a, b))))
    return sorted((a, b) for a, b in edges)


def distances(n: int, edges: Edges, start: int) -> dict[int, int]:
    """Hops from ``start`` to every node (breadth first)."""
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    dist = {start: 0}
    todo = deque([start])
    while todo:
        x = todo.popleft()
        for y in adj[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                todo.append(y)
    return dist


class Sim:
    """N routers joined by ``edges``; links deliver in FIFO order, one message per step
    (``step`` seconds apart). Announcements go out after each step, as a node sends
    them when its task yields; ``run`` also fires the routers' timers. Each node checks
    batches with its own ``Verifier``, as a node does."""

    def __init__(self, n: int, edges: Edges, *, mode: GossipMode = "flood",
                 step: float = 0.001, **cfg: Any) -> None:
        self.identities = SIM_IDENTITIES[:n]
        self.ids = [i.node_id for i in self.identities]
        cfg.setdefault("seen_max_entries", 10_000)
        cfg.setdefault("seen_ttl", 1e9)
        self.routers = [make_router(self.ids[i], mode=mode, **cfg) for i in range(n)]
        self.verifiers = [CountingVerifier() for _ in range(n)]
        self.index = {node_id: i for i, node_id in enumerate(self.ids)}
        self.queue: deque[tuple[int, int, GossipMessage]] = deque()
        self.delivered: dict[int, list[Deliver]] = {i: [] for i in range(n)}
        self.sent: Counter[tuple[int, int, bytes]] = Counter()  # (from, to, batch id)
        self.received: Counter[tuple[int, bytes]] = Counter()  # (node, batch id) copies
        self.kinds: Counter[str] = Counter()  # messages sent, by type
        self.drop: set[tuple[int, int]] = set()  # (from, to): lost silently
        self.links: set[tuple[int, int]] = set()
        self.disconnected: list[tuple[int, int, str]] = []  # (node, peer, reason)
        self.seq: Counter[int] = Counter()
        self.now = 0.0
        self.step = step
        for a, b in edges:
            self.link(a, b)

    def link(self, a: int, b: int) -> None:
        """Open the link a-b (both ends learn at once, and exchange digests)."""
        self.links.add((min(a, b), max(a, b)))
        self.apply(a, self.routers[a].peer_up(self.ids[b], self.now))
        self.apply(b, self.routers[b].peer_up(self.ids[a], self.now))

    def unlink(self, a: int, b: int) -> None:
        """Close the link a-b: messages on their way over it are lost."""
        self.links.discard((min(a, b), max(a, b)))
        self.routers[a].peer_down(self.ids[b])
        self.routers[b].peer_down(self.ids[a])
        self.queue = deque(m for m in self.queue if {m[0], m[1]} != {a, b})

    def apply(self, node: int, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                self.delivered[node].append(action)
            elif isinstance(action, Forward):
                for peer in action.peers:
                    self.send(node, self.index[peer], action.batch)
            elif isinstance(action, Disconnect):
                self.disconnected.append((node, self.index[action.peer], action.reason))
                self.unlink(node, self.index[action.peer])
            else:
                for msg in action.msgs:
                    self.send(node, self.index[action.peer], msg)

    def send(self, node: int, to: int, msg: GossipMessage) -> None:
        self.kinds[type(msg).__name__] += 1
        if isinstance(msg, Batch):
            self.sent[(node, to, msg.id)] += 1
        if (node, to) not in self.drop:
            self.queue.append((to, node, msg))

    def publish(self, node: int, batch: Batch, body: BatchBody) -> None:
        self.apply(node, self.routers[node].publish(batch, body, self.now))
        self.announce()

    def announce(self) -> None:
        for i, r in enumerate(self.routers):
            self.apply(i, r.take_announcements())

    def run(self, max_time: float = 60.0) -> None:
        """Deliver until nothing moves and no timer is left (or ``max_time`` passes)."""
        end = self.now + max_time
        steps = 0
        while self.now < end:
            steps += 1
            assert steps < 200_000, "the gossip does not end"
            if self.queue:
                self.now += self.step
                node, sender, msg = self.queue.popleft()
                if isinstance(msg, Batch):
                    self.received[(node, msg.id)] += 1
                self.apply(node, self.routers[node].on_message(
                    msg, self.ids[sender], self.now, self.verifiers[node]))
                self.announce()
                continue
            deadlines = [d for r in self.routers if (d := r.next_deadline()) is not None]
            if not deadlines or min(deadlines) > end:
                return
            self.now = max(self.now, min(deadlines))
            for i, r in enumerate(self.routers):
                self.apply(i, r.tick(self.now))
            self.announce()

    def delivered_ids(self, node: int) -> list[bytes]:
        """Ids of the messages (not batches) delivered at ``node``, in order."""
        return [item.id for d in self.delivered[node] for item in d.body.items]

    def make(self, node: int, k: int, *, count: int = 1,
             to: int | None = None) -> tuple[Batch, BatchBody]:
        """Batch ``k`` of ``node``, signed by it, with ``count`` messages, numbered next
        in the node's sequence."""
        prefix = self.ids[node][:8]
        msgs = [
            Item(prefix + (1000 * k + j).to_bytes(8, "big"), "t", b"%d/%d/%d" % (node, k, j))
            for j in range(count)
        ]
        to_id = None if to is None else self.ids[to]
        self.seq[node] += 1
        return make_batch(self.identities[node], prefix + k.to_bytes(8, "big"), to_id, msgs,
                          epoch=1, seq=self.seq[node])
