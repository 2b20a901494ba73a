"""``simulate.py --topology join``: membership (issue 18) in the simulator.

Every node starts with only the seed(s) as its static peer (``--peer``), discovery off:
the mesh can only grow past the seeds through membership (records spread by gossip,
peer exchange). Phases, all in virtual time under trio's ``MockClock``:

1. Start all nodes at once (the seeds first). ``membership_converged_s``: time until
   every live node's ``node.membership.members()`` lists every live node as alive
   (None if that did not happen within ``--converge-max``).
2. Once converged, measure the traffic for ``--measure`` seconds: the bytes of the
   membership frames (``Members``, ``MemberDigest``, ``MemberHash``, ``ProbeReq``,
   ``ProbeAck``: ``MEMBER_FRAMES``) per node per second, and of all frames.
3. Kill the seeds (a crash: no Bye) and wait ``--after-kill`` seconds: is the mesh of
   the live nodes still connected (links), does every live node still know every live
   node as alive, and when did every live node hold the seeds dead.

Throughout, ``--loss P`` loses that share of the frames on every link
(``p2pnode.testing.SimNet``), and each ``member_suspect`` / ``member_dead`` event that
a node emits about a node that is in fact running counts as a false suspicion / false
death (``false_suspicions``, ``false_deaths``: events, one per node that hears it;
``false_suspicions_distinct``: the suspicions themselves, by member and incarnation).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from p2pnode.config import NodeConfig
from p2pnode.members import MemberInfo
from p2pnode.node import Node
from p2pnode.testing import MemoryNetwork, SimNet, make_identity, memory_config

if TYPE_CHECKING:
    from simulate import Options

#: The frames that carry membership (counted in ``membership_bytes_per_s_per_node``),
#: with their message tags (docs/protocol.md; ``tests/test_simulate.py`` checks them
#: against the wire's).
MEMBER_FRAMES = {"Members": 17, "MemberDigest": 18, "MemberHash": 19, "ProbeReq": 20,
                 "ProbeAck": 21}
POLL = 0.1  # virtual seconds between checks of the member lists


#: The --topology join options: (flag, type, default, metavar, help).
JOIN_OPTIONS: tuple[tuple[str, type, Any, str, str], ...] = (
    ("--seeds", int, 1, "K", "nodes every other node is given as its only --peer"),
    ("--loss", float, 0.0, "P", "share of frames lost on every link (0-0.5)"),
    ("--converge-max", float, 120.0, "S",
     "give up waiting for membership to converge after this long"),
    ("--measure", float, 60.0, "S", "once converged, measure the traffic this long"),
    ("--after-kill", float, 30.0, "S",
     "after killing the seeds, check the mesh this much later"),
)


def add_join_arguments(p: argparse.ArgumentParser) -> None:
    """The --topology join options, in a group of their own."""
    join = p.add_argument_group("--topology join (membership)")
    for flag, kind, default, metavar, text in JOIN_OPTIONS:
        join.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
    join.add_argument("--loss-mode", choices=("drop", "retransmit"), default="drop",
                      help="a lost frame is gone, or arrives after TCP's retransmission "
                           "timeout (0.2 s, doubling) with the frames behind it")


def member_tags() -> dict[int, str]:
    """The message tags of ``MEMBER_FRAMES``: tag -> name."""
    return {tag: name for name, tag in MEMBER_FRAMES.items()}


class JoinSimulation:
    """N real nodes joining through ``opts.seeds`` seeds (nodes 0..K-1)."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        lat_rng = random.Random(opts.seed + 1)
        base, jitter = opts.latency_ms / 1000, opts.jitter_ms / 1000
        self.sim = SimNet(latency=lambda: base + lat_rng.uniform(0, jitter),
                          loss=opts.loss, loss_mode=opts.loss_mode, seed=opts.seed + 2,
                          count_frames=True)
        self.net = MemoryNetwork(sim=self.sim)
        self.identities = [make_identity(random.Random(opts.seed + i))
                           for i in range(opts.nodes)]
        self.index = {ident.node_id: i for i, ident in enumerate(self.identities)}
        self.seeds = list(range(min(opts.seeds, opts.nodes)))
        self.nodes: list[Node] = []
        self.live: set[int] = set()
        self.live_ids: set[bytes] = set()
        self.events: Counter[str] = Counter()
        self.false_suspicions = 0
        self.false_deaths = 0
        self.falsely_dead: set[int] = set()  # nodes some live node declared dead wrongly
        #: (member, incarnation) of each false suspicion: one suspicion, heard by many
        self.suspicions: set[tuple[bytes, int]] = set()
        self.figures: dict[str, Any] = {}
        self.wall_linked = 0.0  # wall clock when every node had started

    # -- nodes ---------------------------------------------------------------------

    def config(self, i: int) -> NodeConfig:
        o = self.opts
        if i in self.seeds:  # seeds join the first seed; the first seed knows nobody
            peers = (("mem", 1),) if i else ()
        else:
            peers = tuple(("mem", s + 1) for s in self.seeds)
        over: dict[str, Any] = {"seed": o.seed * 1_000_003 + i, "peers": peers,
                                "peer_exchange": True,
                                "ping_interval": o.ping_interval,
                                "link_timeout": o.link_timeout}
        over.update(o.extra)
        return memory_config(i, **over)

    async def start_node(self, nursery: trio.Nursery, i: int) -> None:
        node = Node(self.config(i), transport=self.net.transport(),
                    identity=self.identities[i], api=False)
        node.membership.add_listener(lambda kind, member: self.on_event(kind, member))
        self.nodes.append(node)
        self.live.add(i)
        self.live_ids.add(node.node_id)
        await nursery.start(node.run)

    def on_event(self, kind: str, member: MemberInfo) -> None:
        self.events[kind] += 1
        if member.node_id not in self.live_ids:
            return
        if kind == "member_suspect":
            self.false_suspicions += 1
            self.suspicions.add((member.node_id, member.incarnation))
        elif kind == "member_dead":
            self.false_deaths += 1
            self.falsely_dead.add(self.index[member.node_id])

    def kill(self, i: int) -> None:
        self.nodes[i].kill()
        self.live.discard(i)
        self.live_ids.discard(self.nodes[i].node_id)

    # -- checks ----------------------------------------------------------------------

    def knows_all(self, i: int) -> bool:
        """Whether node ``i`` lists every live node as alive."""
        alive = {m.node_id for m in self.nodes[i].membership.members() if m.state == "alive"}
        return self.live_ids <= alive

    def holds_dead(self, i: int, ids: set[bytes]) -> bool:
        """Whether node ``i`` lists every one of ``ids`` as dead."""
        states = {m.node_id: m.state for m in self.nodes[i].membership.members()}
        return all(states.get(x) == "dead" for x in ids)

    def components(self) -> int:
        """Connected components of the live nodes' links (1: one connected mesh)."""
        adj: dict[int, set[int]] = {i: set() for i in self.live}
        for i in self.live:
            links = self.nodes[i].links
            for peer in links.links if links is not None else ():
                j = self.index.get(peer)
                if j in self.live and j is not None:
                    adj[i].add(j)
                    adj[j].add(i)
        seen: set[int] = set()
        count = 0
        for start in adj:
            if start in seen:
                continue
            count += 1
            todo = [start]
            seen.add(start)
            while todo:
                for nb in adj[todo.pop()]:
                    if nb not in seen:
                        seen.add(nb)
                        todo.append(nb)
        return count

    async def wait_all(self, check: Any, within: float) -> float | None:
        """Poll until ``check(i)`` holds for every live node (a node found true is not
        asked again until a last check of all); the virtual seconds it took, or None."""
        t0 = trio.current_time()
        with trio.move_on_after(within):
            while True:
                pending = set(self.live)
                while pending:
                    pending = {i for i in pending if not check(i)}
                    if pending:
                        await trio.sleep(POLL)
                if all(check(i) for i in self.live):
                    return round(trio.current_time() - t0, 3)
        return None

    # -- phases ------------------------------------------------------------------------

    async def measure(self, seconds: float) -> None:
        """Frame bytes per node per second over ``seconds`` of converged running."""
        tags = member_tags()
        before = Counter(self.sim.frame_bytes)
        suspicions = len(self.suspicions)
        await trio.sleep(seconds)
        sent = self.sim.frame_bytes - before
        per = max(1, len(self.live)) * seconds
        self.figures.update({
            "measure_s": seconds,
            "membership_bytes_per_s_per_node": round(
                sum(n for tag, n in sent.items() if tag in tags) / per, 1),
            "membership_bytes_by_frame": {name: round(sent[tag] / per, 1)
                                          for tag, name in tags.items()},
            "all_bytes_per_s_per_node": round(sum(sent.values()) / per, 1),
            "still_converged_after_measure": all(self.knows_all(i) for i in self.live),
            "false_suspicions_distinct_measure": len(self.suspicions) - suspicions,
        })

    async def kill_seeds(self) -> None:
        o = self.opts
        seed_ids = {self.nodes[s].node_id for s in self.seeds}
        for s in self.seeds:
            self.kill(s)
        t0 = trio.current_time()
        dead_s = await self.wait_all(lambda i: self.holds_dead(i, seed_ids), o.after_kill)
        await trio.sleep_until(t0 + o.after_kill)
        self.figures.update({
            "seeds_dead_everywhere_s": dead_s,
            "after_kill_s": o.after_kill,
            "components_after_seed_kill": self.components(),
            "knows_all_after_seed_kill": sum(self.knows_all(i) for i in self.live),
        })
        self.figures["connected_after_seed_kill"] = (
            self.figures["components_after_seed_kill"] == 1)

    async def run(self) -> dict[str, Any]:
        o = self.opts
        t_start = trio.current_time()
        wall0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(o.nodes):
                await self.start_node(nursery, i)
            self.wall_linked = time.perf_counter()
            if o.gc_freeze:  # as Simulation.run: keep the long-lived nodes out of the GC
                gc.collect()
                gc.freeze()
                gc.set_threshold(100_000, 50, 1000)
            converged = await self.wait_all(self.knows_all, o.converge_max)
            self.figures["membership_converged_s"] = (
                None if converged is None else round(trio.current_time() - t_start, 3))
            self.figures["components_converged"] = self.components()
            self.figures["member_rate_limited_converged"] = self.rate_limited()
            self.figures["mean_degree_converged"] = self.mean_degree()
            self.figures["wall_converge_seconds"] = round(time.perf_counter() - wall0, 3)
            if converged is not None:
                await self.measure(o.measure)
            if o.nodes > len(self.seeds):
                await self.kill_seeds()
            self.figures["virtual_run_s"] = round(trio.current_time() - t_start, 3)
            self.figures["mean_degree"] = self.mean_degree()  # before the nodes stop
            self.figures["max_degree"] = max(self.degrees(), default=0)
            self.figures["member_rate_limited"] = self.rate_limited()
            nursery.cancel_scope.cancel()
        return self.summary()

    def rate_limited(self) -> int:
        """Member records, claims and probes the live nodes dropped for ``member_rate``."""
        return sum(self.nodes[i].members_glue.stats.rate_limited for i in self.live)

    def degrees(self) -> list[int]:
        return [len(n.links.links) for i, n in enumerate(self.nodes)
                if i in self.live and n.links is not None]

    def mean_degree(self) -> float:
        degrees = self.degrees()
        return round(sum(degrees) / len(degrees), 3) if degrees else 0.0

    def summary(self) -> dict[str, Any]:
        o = self.opts
        return {
            "nodes": o.nodes, "topology": "join", "seeds": len(self.seeds), "seed": o.seed,
            "loss": o.loss, "loss_mode": o.loss_mode, "frames_lost": self.sim.frames_lost,
            "latency_ms": o.latency_ms, "jitter_ms": o.jitter_ms,
            "ping_interval": o.ping_interval, "link_timeout": o.link_timeout,
            **self.figures,
            "false_suspicions": self.false_suspicions,
            "false_suspicions_distinct": len(self.suspicions),
            "false_deaths": self.false_deaths,
            "falsely_dead_members": len(self.falsely_dead),
            "member_events": dict(sorted(self.events.items())),
        }


def human(r: dict[str, Any]) -> str:
    """The join figures as a few lines of text."""
    conv = r.get("membership_converged_s")
    lines = [
        f"{r['nodes']} nodes joining through {r['seeds']} seed(s), seed {r['seed']}, "
        f"loss {r['loss']:g} ({r['loss_mode']}, {r['frames_lost']} frames lost)",
        "membership converged: " + (f"{conv} s (virtual)" if conv is not None else
                                    "no (within --converge-max)")
        + f"; mean degree {r['mean_degree_converged']} then, {r['mean_degree']} at the "
        f"end (max {r['max_degree']})",
    ]
    if "membership_bytes_per_s_per_node" in r:
        lines.append(f"converged traffic per node: membership "
                     f"{r['membership_bytes_per_s_per_node']} B/s, all frames "
                     f"{r['all_bytes_per_s_per_node']} B/s (over {r['measure_s']:g} s)")
    if "connected_after_seed_kill" in r:
        lines.append(f"seeds killed: {r['components_after_seed_kill']} component(s) "
                     f"{r['after_kill_s']:g} s later; {r['knows_all_after_seed_kill']} "
                     f"nodes know every live node; seeds dead everywhere after "
                     f"{r['seeds_dead_everywhere_s']} s")
    lines.append(f"false suspicions {r['false_suspicions_distinct']} (heard "
                 f"{r['false_suspicions']} times), false deaths {r['false_deaths']} "
                 f"({r['falsely_dead_members']} members)")
    lines.append(f"wall {r.get('wall_seconds')} s, peak RSS {r.get('peak_rss_mb')} MB")
    return "\n".join(lines)
