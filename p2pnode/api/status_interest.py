"""The ``interest`` section of the ``status`` reply: interest routing
([interest.md](interest.md)), what this node received for its own apps against what
it passed on for others, and the repair of its streams."""

from __future__ import annotations

from typing import Annotated

from .status_base import Section, _counter, _gauge


class InterestStatus(Section):
    wanted: Annotated[int, _counter(
        "routed batches received that this node's subscriptions want")]
    relayed: Annotated[int, _counter(
        "routed batches received only to pass on toward the nodes that want them")]
    routed: Annotated[int, _counter(
        "routed batches sent on along the origin's tree to the members that want them "
        "(to nobody when this node is a leaf of the tree)")]
    astray: Annotated[int, _counter(
        "... of them also sent toward members the copy was meant for that this node's "
        "tree puts on another branch (views of the mesh that differ)")]
    off_tree: Annotated[int, _counter(
        "routed batches sent on by shortest paths (this node not in the origin's tree)")]
    unrouted: Annotated[int, _counter(
        "routed batches sent on as in tree mode: interests or links not known yet")]
    unwanted: Annotated[int, _counter(
        "routed batches published here that no other member wants, or received when no "
        "member wants them any more (sent to nobody)")]
    caught_up: Annotated[int, _counter("announcements of recent routed batches to members "
                                       "that came to want them after they went by")]
    early: Annotated[int, _counter("batches caught up here but published before this "
                                   "node's subscription began (not delivered)")]
    tails: Annotated[int, _counter(
        "announcements of streams' last batches to the peers a tree adds after the "
        "graph lost a link or a node")]
    streams: Annotated[int, _gauge("streams (origin, run, topic) kept in order")]
    stream_held: Annotated[int, _counter(
        "batches that waited for an earlier one of their stream")]
    stream_gaps: Annotated[int, _counter(
        "batches of a stream given up (never came within `order_hold`)",
        drop="stream batches given up (never came)")]
    stream_late: Annotated[int, _counter(
        "batches that came after a later one of their stream (delivered as they came)")]
    fetch_asked: Annotated[int, _counter(
        "batches this node asked for (Fetch) to fill a gap in a stream")]
    fetch_retried: Annotated[int, _counter(
        "... of them asked for again: no answer came (the ask died on the way)")]
    fetch_asked_on: Annotated[int, _counter(
        "batches asked on toward the origin for a peer")]
    fetch_answered: Annotated[int, _counter("batches sent in answer to a Fetch")]
    fetch_refused: Annotated[int, _counter(
        "Fetch numbers not asked on: too many waiting, or no way to the origin",
        drop="Fetch numbers not asked on")]
