"""Helpers shared by the tests and the simulator: an in-memory network of nodes.

``MemoryNetwork`` is a ``Transport`` factory: nodes listen on made-up addresses
(``"mem"``, port N) and connect to each other through ``simnet`` streams (bounded,
with optional latency, freezing and cut paths), so whole meshes run in one
process, in virtual time if the caller wants. A node is known by its port.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..config.settings import NodeConfig
from ..identity.keypair import NodeIdentity
from ..net.transport import StreamHandler, TransportCounters
from .simnet import SimNet

if TYPE_CHECKING:
    from ..node.node import Node


@dataclass
class MemoryNetwork:
    """A switchboard of in-memory listeners, keyed by port."""

    _listeners: dict[int, tuple[trio.Nursery, StreamHandler]] = field(default_factory=dict)
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    connections: int = 0
    sim: SimNet = field(default_factory=SimNet)

    def transport(self) -> MemoryTransport:
        """A transport attached to this network."""
        return MemoryTransport(self)


class MemoryTransport:
    """A ``Transport`` over a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.port: int | None = None

    def counters(self) -> TransportCounters:
        """Nothing to count in memory."""
        return TransportCounters()

    async def listen(
        self,
        host: str,
        port: int,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        net = self.network
        if port == 0:
            port = next(p for p in net._ports if p not in net._listeners)
        if port in net._listeners:
            raise OSError(f"memory port {port} in use")
        async with trio.open_nursery() as nursery:
            net._listeners[port] = (nursery, handler)
            self.port = port
            try:
                task_status.started(("mem", port))
                await trio.sleep_forever()
            finally:
                del net._listeners[port]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        entry = self.network._listeners.get(port)
        if entry is None:
            raise ConnectionRefusedError(f"nothing listens on mem:{port}")
        nursery, handler = entry
        ours, theirs = self.network.sim.stream_pair(self.port or 0, port)
        self.network.connections += 1
        nursery.start_soon(handler, theirs, f"mem:{self.port or 0}")
        return ours


def memory_config(index: int, **overrides: object) -> NodeConfig:
    """A config for node ``index`` of an in-memory mesh: port ``index + 1``, no mDNS, no
    mesh view announcements (``mesh_interval=0``: tests that count messages stay exact;
    pass ``mesh_interval`` to turn them on), no peer exchange (``peer_exchange=False``:
    the links are the ones asked for; pass ``peer_exchange=True`` to have nodes link
    to the members they learn of)."""
    base: dict[str, object] = {
        "name": f"n{index}", "listen_host": "mem", "listen_port": index + 1,
        "mdns": False, "insecure": True, "mesh_interval": 0.0, "peer_exchange": False,
        "socket_path": Path(f"/nonexistent/p2pnode-mem-{index}.sock"),
        "data_dir": Path(f"/nonexistent/p2pnode-mem-{index}"), "seed": index,
    }
    base.update(overrides)
    return NodeConfig(**base)  # type: ignore[arg-type]


async def start_memory_mesh(
    nursery: trio.Nursery,
    edges: list[tuple[int, int]],
    n: int,
    *,
    seed: int = 0,
    network: MemoryNetwork | None = None,
    **overrides: object,
) -> list[Node]:
    """Start ``n`` nodes on a memory network; node ``i`` keeps dialling ``j`` for each
    edge ``(i, j)``. Node ids come from ``seed``. Returns the nodes (links still forming:
    see ``wait_linked``)."""
    from ..node.node import Node

    net = network or MemoryNetwork()
    rng = random.Random(seed)
    nodes: list[Node] = []
    for i in range(n):
        peers = tuple(("mem", j + 1) for a, j in edges if a == i)
        cfg = memory_config(i, peers=peers, **overrides)
        node = Node(cfg, transport=net.transport(), identity=make_identity(rng), api=False)
        await nursery.start(node.run)
        nodes.append(node)
    return nodes


def make_identity(rng: random.Random) -> NodeIdentity:
    """A node identity from a seeded random source (deterministic tests and simulations)."""
    return NodeIdentity.from_key(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))


def link_count(node: Node) -> int:
    """How many links ``node`` has open."""
    return len(node.links.links) if node.links is not None else 0


async def wait_until(predicate: Callable[[], bool], *, poll: float = 0.01) -> None:
    """Poll ``predicate`` in trio time until it is true. Meant for tests under trio's
    autojump clock, where polling costs no real time; callers set a ``fail_after``."""
    while not predicate():  # noqa: ASYNC110 - virtual-time polling, see docstring
        await trio.sleep(poll)


async def wait_topology(nodes: list[Node], predicate: Callable[[], bool]) -> None:
    """Wait, without polling, until ``predicate`` holds; it is re-checked each time a
    link of any of ``nodes`` opens or closes. Callers set a ``fail_after``."""
    while True:
        events = [node.links.changed for node in nodes if node.links is not None]
        if predicate():
            return
        async with trio.open_nursery() as nursery:

            async def wake(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            for event in events:
                nursery.start_soon(wake, event)


async def wait_linked(nodes: list[Node], edges: list[tuple[int, int]]) -> None:
    """Wait until every edge is a link on both of its ends."""

    def done() -> bool:
        for a, b in edges:
            la, lb = nodes[a].links, nodes[b].links
            if la is None or lb is None:
                return False
            if nodes[b].node_id not in la.links or nodes[a].node_id not in lb.links:
                return False
        return True

    await wait_topology(nodes, done)


def line_edges(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


def ring_edges(n: int) -> list[tuple[int, int]]:
    return [*line_edges(n), (n - 1, 0)]


def random_connected_edges(n: int, degree: int, seed: int) -> list[tuple[int, int]]:
    """A random connected graph: a random spanning tree plus random extra edges until the
    average degree is about ``degree``. No self-loops, no duplicate pairs."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    pairs: set[tuple[int, int]] = set()
    for k in range(1, n):
        a, b = order[k], order[rng.randrange(k)]
        pairs.add((min(a, b), max(a, b)))
    want = n * degree // 2
    while len(pairs) < min(want, n * (n - 1) // 2):
        a, b = rng.sample(range(n), 2)
        pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def count_deliveries(node: Node) -> Counter[bytes]:
    """A counter of the deliveries of each message id at ``node``, kept up to date."""
    counter: Counter[bytes] = Counter()
    node.on_deliver.append(lambda msg: counter.update([msg.id]))
    return counter


def random_regular_edges(n: int, degree: int, seed: int) -> list[tuple[int, int]]:
    """A random connected graph where every node has ``degree`` links (one node one more
    when ``n * degree`` is odd): random pairing of link ends, redrawn until it has no
    self-loop, no duplicate pair and is connected."""
    rng = random.Random(seed)
    degree = min(degree, n - 1)
    if n < 2 or degree < 1:
        return []
    for _ in range(1000):
        pairs = _pair_stubs(n, degree, rng)
        if pairs is not None and _connected(n, pairs):
            return sorted(pairs)
    return random_connected_edges(n, degree, seed)  # pragma: no cover - tiny dense graphs


def _pair_stubs(n: int, degree: int, rng: random.Random) -> set[tuple[int, int]] | None:
    stubs = [i for i in range(n) for _ in range(degree)]
    if len(stubs) % 2:
        stubs.append(rng.randrange(n))
    pairs: set[tuple[int, int]] = set()
    while stubs:
        for _ in range(100):
            i, j = rng.randrange(len(stubs)), rng.randrange(len(stubs))
            a, b = stubs[i], stubs[j]
            if i != j and a != b and (min(a, b), max(a, b)) not in pairs:
                break
        else:
            return None
        pairs.add((min(a, b), max(a, b)))
        for k in sorted((i, j), reverse=True):
            stubs[k] = stubs[-1]
            stubs.pop()
    return pairs


def _connected(n: int, pairs: set[tuple[int, int]]) -> bool:
    adj: dict[int, list[int]] = {}
    for a, b in pairs:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen, todo = {0}, [0]
    while todo:
        for nb in adj.get(todo.pop(), ()):
            if nb not in seen:
                seen.add(nb)
                todo.append(nb)
    return len(seen) == n


async def open_raw_link(net: MemoryNetwork, hub: Node, node_id: bytes,
                        name: str = "raw") -> trio.abc.Stream:
    """Link to ``hub`` by hand over ``net`` (no TLS) as ``node_id``, and return the open
    stream: tests then send whatever frames they like (forged batches) or stop reading
    (a stuck peer). Raises ``AssertionError`` if the hub refuses or hangs up."""
    from .. import PROTOCOL_VERSION
    from ..wire.link import LinkProtocol, LinkState, PeerHello
    from ..wire.messages import Hello

    stream = await net.transport().connect("mem", hub.config.listen_port)
    hello = Hello(PROTOCOL_VERSION, node_id, name, "", network=hub.network_tag)
    proto = LinkProtocol(hello, max_frame=hub.config.max_frame,
                         max_payload=hub.config.max_payload)
    await stream.send_all(proto.hello_bytes())
    while proto.state is not LinkState.OPEN:
        data = await stream.receive_some()
        assert data, "the hub closed the connection"
        assert proto.state is not LinkState.CLOSED, "the hub refused the link"
        for event in proto.receive_data(data):
            if isinstance(event, PeerHello):
                await stream.send_all(proto.proceed())
    return stream
