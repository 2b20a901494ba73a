"""``simulate.py --topics T``: many topics, each node subscribing to some (issue 19).

Topics are ``t0`` .. ``t{T-1}``. Each node subscribes to each topic with probability
``--subscribe-fraction F`` (drawn from ``--seed``, the same draw whatever the gossip
mode), and each message goes to a random topic (also from ``--seed``) from one of the
``--publishers``. The subscriptions are real: each node runs its API server (without
its socket: ``Topics.prepare``), and at start one local app session sends it a
``{"op":"subscribe","topics":[...]}`` line, handled as a client's line is. So the node
knows its local interest as it would with apps attached, and a routing mode that uses
it (``--gossip interest``, being built for issue 19) sees it. A node that draws no topic
has no app (a subscribe with no topics would mean all of them). The app's events are
written to ``/dev/null``. The first message is published ``--settle`` seconds (default
3 with topics) after the mesh is linked, time for the member records to spread. The
simulator's own delivery callback (``Node.on_deliver``) sees every message a node hands
to local apps; it is not a subscription.

A node is *interested* in a message if it subscribes to the message's topic and was
running from the publish to the end of the run (a crashed node is not; a restarted
one, ``--rejoin``, subscribes again when it starts and is interested in what is
published after). Figures, added to the ``--json`` object:

- ``delivery_ratio``: deliveries to interested nodes / interested (node, message) pairs
  (``possible_deliveries``). A copy handed to a node that is not interested is not a
  delivery.
- ``copies_received``: message copies read off links by all nodes (each batch copy
  counts as many copies as the batch has messages, new or duplicate), plus the origin's
  own copy when the origin is interested (its local delivery, so that 1.0 is perfect).
  ``copies_uninterested``: the part read by nodes without a matching subscription.
- ``copies_per_delivery``: ``copies_received`` / deliveries.
- ``copies_per_message``: ``copies_received`` / messages (issue 19's target: at most
  3 x ``interested_per_message``).
- ``uninterested_copies_per_message``: ``copies_uninterested`` / messages.
- ``interested_per_message``: ``possible_deliveries`` / messages.
- ``announcements_per_message``: batch announcements (IHave entries) received by all
  nodes, per message (``announcements_per_delivery`` divides by the deliveries to
  interested nodes only).
- ``copies_by_cause``: why each copy was sent, {cause: [copies, duplicates]} per message
  (tree push, off-tree push, tree-mode fallback, graft, fetch answer: ``simcauses.py``).

Only the batches of the run's messages count: a publisher's own link lists (``$mesh``,
sent again whenever one of its links opens or breaks) are not message copies (before
this was fixed they were counted, in interest mode only, and made most of the copies of
the crash scenarios).

``--compare tree,flood`` runs the same seeded scenario once per gossip mode (the same
mesh, subscriptions, publishers, topics and crashes) and prints the figures side by
side; ``--json`` then prints one object per mode, keyed by the mode. Any mode the node's
``NodeConfig`` accepts can be named.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from p2pnode.api import MAX_TOPICS_PER_CLIENT, Session
from p2pnode.errors import ConfigError
from p2pnode.node import Node
from p2pnode.testing import memory_config

if TYPE_CHECKING:
    from simulate import Options

#: The most topics a run may have: what one app session may subscribe to.
MAX_TOPICS = MAX_TOPICS_PER_CLIENT
DEFAULT_FRACTION = 0.1
#: --settle with --topics: interest routing (docs/interest.md) gathers a node's subscribe
#: changes for up to 1 s into its member record, which then floods the mesh.
SETTLE = 3.0
#: The most gossip modes one ``--compare`` runs.
MAX_COMPARE = 4
#: The figures ``--compare`` prints side by side (the JSON has them all).
COMPARED = ("delivery_ratio", "possible_deliveries", "interested_per_message",
            "copies_per_message", "uninterested_copies_per_message", "copies_per_delivery",
            "announcements_per_message", "hops_p50", "hops_max", "latency_p50_ms",
            "latency_p99_ms", "crashed", "wall_seconds")


def topic_name(k: int) -> str:
    return f"t{k}"


def draw_subscriptions(nodes: int, topics: int, fraction: float,
                       seed: int) -> list[frozenset[str]]:
    """Per node, the topics it subscribes to: each with probability ``fraction``."""
    rng = random.Random(f"subscriptions:{seed}")
    return [frozenset(topic_name(k) for k in range(topics) if rng.random() < fraction)
            for _ in range(nodes)]


def draw_message_topics(messages: int, topics: int, seed: int) -> list[str]:
    """The topic of each message, in publish order."""
    rng = random.Random(f"message-topics:{seed}")
    return [topic_name(rng.randrange(topics)) for _ in range(messages)]


async def _no_socket(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """``ApiServer.run`` without the socket: the server's state serves, nothing listens."""
    task_status.started(None)


class Topics:
    """The topic side of one run: who subscribes to what, each message's topic, and the
    copies each node read (``Simulation`` calls it; all draws come from the seed)."""

    def __init__(self, opts: Options) -> None:
        self.subs = draw_subscriptions(opts.nodes, opts.topics, opts.subscribe_fraction,
                                       opts.seed)
        self.message_topics = draw_message_topics(opts.messages, opts.topics, opts.seed)
        self.copies_at: Counter[tuple[bytes, int]] = Counter()  # (batch key, node) -> copies
        self.local_copies = 0  # messages published by a node interested in them
        self._devnull = -1

    def wants(self, i: int, topic: str) -> bool:
        """Whether node ``i`` subscribes to ``topic``."""
        return topic in self.subs[i]

    def prepare(self, node: Node) -> None:
        """Before ``node.run``: its API server keeps its state but binds no socket."""
        assert node.api is not None, "the node must be made with api=True"
        node.api.run = _no_socket  # type: ignore[method-assign]

    def subscribe(self, node: Node, i: int) -> None:
        """Node ``i``'s local app subscribes to its topics, through the API server's
        handling of a request line (as a connected client's line is)."""
        topics = sorted(self.subs[i])
        api = node.api
        if not topics or api is None:
            return
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_WRONLY)
        session = Session(node.config)
        session.fd = self._devnull  # the events the app gets: written, and gone
        api.sessions.add(session)
        errors = api.stats.errors
        line = json.dumps({"op": "subscribe", "id": 1, "topics": topics}).encode()
        waiting = api._handle_line(session, line)
        if waiting is not None or api.stats.errors != errors:
            raise RuntimeError(f"node {i}: the subscribe to {topics} was not taken")

    def close(self) -> None:
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1

    def counter(self, i: int) -> Callable[[bytes], None]:
        """Counts each batch copy node ``i`` reads (by batch key)."""
        copies = self.copies_at

        def count(key: bytes) -> None:
            copies[key, i] += 1

        return count

    def figures(self, batch_topics: dict[bytes, tuple[str, ...]], messages: int,
                possible: int, deliveries: int) -> dict[str, Any]:
        """The topic figures (the module docstring), from the copies counted and the
        topics of each batch published (``batch_topics``: only this run's app batches)."""
        interested = uninterested = 0
        for (key, i), n in self.copies_at.items():
            for topic in batch_topics.get(key, ()):
                if topic in self.subs[i]:
                    interested += n
                else:
                    uninterested += n
        copies = interested + uninterested + self.local_copies

        def per(value: int, count: int) -> float:
            return round(value / count, 4) if count else 0.0

        return {
            "subscriptions": sum(len(s) for s in self.subs),
            "nodes_without_subscription": sum(1 for s in self.subs if not s),
            "copies_received": copies, "copies_uninterested": uninterested,
            "copies_per_delivery": per(copies, deliveries),
            "copies_per_message": per(copies, messages),
            "uninterested_copies_per_message": per(uninterested, messages),
            "interested_per_message": per(possible, messages),
        }


# -- options ------------------------------------------------------------------------


def add_topic_arguments(p: argparse.ArgumentParser) -> None:
    """The --topics and --compare options, in a group of their own."""
    group = p.add_argument_group("topics (issue 19: each node subscribes to some)")
    group.add_argument("--topics", type=int, default=0, metavar="T",
                       help="topics t0..t{T-1}; each message goes to a random one (0: one "
                            "topic that every node takes)")
    group.add_argument("--subscribe-fraction", type=float, default=None, metavar="F",
                       help="with --topics: each node subscribes to each topic with this "
                            f"probability (default {DEFAULT_FRACTION})")
    group.add_argument("--settle", type=float, default=None, metavar="S",
                       help="virtual seconds between the linked mesh and the first publish, "
                            "for the member records (which carry the interests that "
                            f"interest routing reads) to spread (default 0; {SETTLE} with "
                            "--topics)")
    group.add_argument("--compare", default=None, metavar="MODE,MODE",
                       help="run the same scenario once per gossip mode (e.g. tree,flood) "
                            "and print the figures side by side")


def gossip_problem(flag: str, mode: str) -> str | None:
    """Why the node does not take gossip mode ``mode`` (None: it does), in its words."""
    try:
        memory_config(0, gossip=mode)
    except ConfigError as exc:
        return f"{flag} {mode}: {exc}"
    return None


def topic_problems(a: argparse.Namespace) -> list[str]:
    """What is impossible about the topic and --compare settings (sets
    ``a.subscribe_fraction`` and ``a.compare`` to their resolved values)."""
    out: list[str] = []
    if a.topics and a.topology == "join":
        out.append("--topics: not with --topology join (it publishes no messages)")
    if not 0 <= a.topics <= MAX_TOPICS:
        out.append(f"--topics {a.topics}: must be 0-{MAX_TOPICS}")
    if a.subscribe_fraction is not None and not a.topics:
        out.append("--subscribe-fraction: only with --topics")
    fraction = DEFAULT_FRACTION if a.subscribe_fraction is None else a.subscribe_fraction
    if not (math.isfinite(fraction) and 0 <= fraction <= 1):
        out.append(f"--subscribe-fraction {fraction:g}: a probability, 0-1")
    a.subscribe_fraction = fraction if a.topics else 0.0
    if a.settle is None:
        a.settle = SETTLE if a.topics else 0.0
    elif not (math.isfinite(a.settle) and 0 <= a.settle <= 600):
        out.append(f"--settle {a.settle:g}: 0-600 virtual seconds")
    modes: tuple[str, ...] = ()
    if a.compare is not None:
        modes = tuple(m.strip() for m in a.compare.split(","))
        if not 2 <= len(modes) <= MAX_COMPARE or len(set(modes)) != len(modes):
            out.append(f"--compare {a.compare}: 2-{MAX_COMPARE} different gossip modes, "
                       "separated by commas (e.g. tree,flood)")
        else:
            out += [p for m in modes if (p := gossip_problem("--compare", m))]
        if a.gossip is not None:
            out.append("--compare runs each mode it names: not with --gossip")
        if a.topology == "join" or a.plot is not None:
            out.append("--compare: not with --topology join or --plot")
    a.compare = modes
    if a.gossip is not None and (p := gossip_problem("--gossip", a.gossip)):
        out.append(p)
    return out


# -- several modes ------------------------------------------------------------------------


def run_compare(opts: Options,
                run: Callable[[Options], tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    """``run`` the scenario once per mode of ``opts.compare``: {mode: figures}."""
    return {mode: run(dataclasses.replace(opts, gossip=mode, compare=()))[0]
            for mode in opts.compare}


def human_compare(results: dict[str, Any], describe: Callable[[dict[str, Any]], str]) -> str:
    """The figures of each mode side by side, under the scenario's first line."""
    first = next(iter(results.values()))
    rows = [("figure", *results)]
    rows += [(key, *(_cell(r.get(key)) for r in results.values()))
             for key in COMPARED if key in first]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [describe(first)]
    if "topics" in first:
        lines.append(f"topics: {first['topics']}, subscribe fraction "
                     f"{first['subscribe_fraction']:g}, {first['subscriptions']} "
                     f"subscriptions; {first['messages']} messages from "
                     f"{first['publishers']} publishers, churn {first['crashed']} crashed")
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def human_topics(r: dict[str, Any]) -> str:
    """The topic line of the human output."""
    return (f"topics: {r['topics']}, subscribe fraction {r['subscribe_fraction']:g}, "
            f"{r['subscriptions']} subscriptions ({r['nodes_without_subscription']} nodes "
            f"with none); per message: {r['interested_per_message']:g} interested, "
            f"{r['copies_per_message']:g} copies received, "
            f"{r['uninterested_copies_per_message']:g} of them by uninterested nodes")
