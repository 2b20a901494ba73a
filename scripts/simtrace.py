"""``simulate.py --trace FILE.json``: what happened to the deliveries a run missed.

A delivery the run missed (a node interested in a message, up from its publication to
the end, that never got it) is a loss the mechanisms of docs/interest.md did not win
back. To find out why, the run records every event of its app batches between nodes:

- ``batch``: a copy read off a link (with the members it named, ``Batch.meant``);
- ``ihave``: an announcement of it (``tail``: a tail notice; ``age``: a catch-up);
- ``graft``: a node asked a peer for it;
- ``fetch``: a node asked a peer for it by its number (a gap in a stream);

each as ``[virtual seconds since the first publish, kind, from node, to node, detail]``,
at most ``MAX_EVENTS`` in all (a bound on memory at scale; ``events_dropped`` says how
many more there were). At the end, for each missed delivery (at most ``MAX_MISSED``),
the file holds the message (its origin, topic, batch, time), whether the node was cut
off from the origin (no path of up nodes between them at the end: no protocol could
have reached it), what the origin thinks of it (member state, whether it counts it as
wanting the topic, whether its view of the mesh has a way to it), that batch's events,
the node's links at the start and at the end; and every node's links at the start and
the crashes (node, time). The JSON of the run itself gains ``missed`` (the first 10
missed deliveries) and ``missed_cut_off`` whether or not ``--trace`` is given.
"""

from __future__ import annotations

import json
from typing import Any

from p2pnode.wire import Batch, BatchBody, Fetch, Graft, IHave

MAX_EVENTS = 2_000_000
MAX_MISSED = 20


class Trace:
    """The events of a run's app batches, by batch key."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.events: dict[bytes, list[list[Any]]] = {}
        self.count = 0
        self.dropped = 0
        self.by_seq: dict[tuple[bytes, int, int], bytes] = {}  # (origin, epoch, seq) -> key
        self.crashes: list[tuple[int, float]] = []

    def _at(self, now: float) -> float:
        return round(now - (self.t0 if self.t0 is not None else now), 6)

    def published(self, key: bytes, body: BatchBody, now: float) -> None:
        """An app batch was made at its origin (``Simulation._watch_publisher``)."""
        if self.t0 is None:
            self.t0 = now
        self.by_seq[body.origin, body.epoch, body.seq] = key
        self.events.setdefault(key, [])

    def crashed(self, i: int, now: float) -> None:
        self.crashes.append((i, self._at(now)))

    def _add(self, key: bytes, event: list[Any]) -> None:
        events = self.events.get(key)
        if events is None:  # not an app batch of the run
            return
        if self.count >= MAX_EVENTS:
            self.dropped += 1
            return
        self.count += 1
        events.append(event)

    def received(self, src: int, dst: int, msg: Any, now: float) -> None:
        """``dst`` read ``msg`` off its link to ``src``."""
        kind = type(msg)
        if kind is Batch:
            self._add(msg.origin + msg.id,
                      [self._at(now), "batch", src, dst, len(msg.meant), msg.hops])
        elif kind is IHave:
            for entry in msg.batches:
                what = ("tail" if entry.seq is not None
                        else "age" if entry.age is not None else "")
                self._add(entry.key, [self._at(now), "ihave", src, dst, what])
        elif kind is Graft:
            for key in msg.keys:
                self._add(key, [self._at(now), "graft", src, dst, ""])
        elif kind is Fetch:
            for seq in msg.seqs:
                key = self.by_seq.get((msg.origin, msg.epoch, seq))
                if key is not None:
                    self._add(key, [self._at(now), "fetch", src, dst, seq])

    def write(self, path: str, missed: list[dict[str, Any]],
              links_start: dict[int, list[int]], links_end: dict[int, list[int]]) -> None:
        """Write the missed deliveries with their batches' events to ``path``."""
        out = []
        for m in missed[:MAX_MISSED]:
            key = bytes.fromhex(m["batch"])
            node = m["node"]
            out.append({**m, "links_start": links_start.get(node, []),
                        "links_end": links_end.get(node, []),
                        "events": self.events.get(key, [])})
        with open(path, "w") as f:
            json.dump({"missed": out, "missed_total": len(missed), "links": links_start,
                       "crashes": self.crashes, "events_dropped": self.dropped}, f)
