"""Delivery of a batch's messages to local subscribers at once (``ApiServer.deliver_items``,
the receiving node's hot path) gives every session exactly what ``deliver`` of each
message gives: the same bytes in the same order, the same drops and ``dropped`` notices
when a queue fills, the same backlog during a replay; and every subscriber of a topic
(all topics, its name, a pattern, a name and a pattern) gets each message once."""

from __future__ import annotations

import json
import types
from pathlib import Path

from p2pnode.api.replaying import Backlog
from p2pnode.api.server import ApiServer
from p2pnode.api.session import Session
from p2pnode.wire.messages import Gossip, Item

from .conftest import loopback_config

ORIGIN = bytes(range(16))
TO = b"\x07" * 16
# (topics subscribed: [] is every topic, queue bytes, held back in a replay's backlog)
SESSIONS: list[tuple[list[str], int, bool]] = [
    ([], 1 << 20, False),
    (["a/x"], 1 << 20, False),
    (["a/+"], 1 << 20, False),
    (["a/x", "a/#"], 1 << 20, False),  # a name and a pattern that both match a/x
    (["b"], 1 << 20, False),
    (["a/x", "b"], 700, False),  # fills up: some lines dropped, then a "dropped" notice
    (["a/x"], 1 << 20, True),
]


def items() -> list[Item]:
    """Runs of one topic and topics alone, text and binary payloads."""
    topics = ["a/x"] * 4 + ["b", "c", "a/y", "a/y"] + ["a/x"] * 3 + ["b"] * 2
    return [Item(bytes([k]) * 16, topic, b"\xff\x00" if k % 5 == 4 else b"m%d" % k)
            for k, topic in enumerate(topics)]


def server(tmp: Path) -> tuple[ApiServer, list[Session]]:
    cfg = loopback_config(tmp, "a")
    backend = types.SimpleNamespace(open_replay=None, retained_replay=None, node_id=TO)
    srv = ApiServer(cfg, backend)  # type: ignore[arg-type]
    sessions = []
    for topics, queue, held in SESSIONS:
        session = Session(cfg)
        session.out.limit = queue
        if held:
            session.backlog = Backlog(500)  # a prefix kept, the rest dropped
        srv._subscribe(session, topics, None)
        sessions.append(session)
    return srv, sessions


def seen(session: Session) -> tuple[object, ...]:
    kept = session.backlog.lines if session.backlog is not None else []
    return (bytes(session.out._buf), b"".join(kept), session.events_dropped,
            session.unreported, session.out.dropped)


async def test_deliver_items_is_deliver_of_each(tmp_path: Path) -> None:
    batch = items()
    one_by_one, sessions_1 = server(tmp_path)
    at_once, sessions_2 = server(tmp_path)
    for _ in range(3):  # again once the small queue is full
        for item in batch:
            one_by_one.deliver(Gossip(item.id, ORIGIN, item.topic, item.data, 3, to=TO))
        at_once.deliver_items(ORIGIN, 3, TO, batch)
    assert [seen(s) for s in sessions_2] == [seen(s) for s in sessions_1]
    assert at_once.stats.events_dropped == one_by_one.stats.events_dropped > 0
    assert sessions_2[-2].events_dropped > 0  # the small queue dropped some
    assert sessions_2[-1].backlog is not None
    assert sessions_2[-1].backlog.dropped > 0

    events = [json.loads(line) for line in bytes(sessions_2[0].out._buf).splitlines()]
    assert [e["msg_id"] for e in events] == [item.id.hex() for item in batch] * 3
    assert events[4]["data_b64"]
    assert events[0]["to"] == TO.hex()
    assert events[0]["hops"] == 3
    for session, wanted in zip(sessions_2[1:4], (["a/x"], ["a/x", "a/y"], ["a/x", "a/y"]),
                               strict=True):
        got = [json.loads(line)["msg_id"] for line in bytes(session.out._buf).splitlines()]
        assert got == [item.id.hex() for item in batch if item.topic in wanted] * 3


async def test_monitors_get_each_message_through_deliver(tmp_path: Path) -> None:
    # With a monitoring session that asked for "delivered" events, each message goes
    # the one-by-one way: one "delivered" event per message, as before.
    srv, sessions = server(tmp_path)
    monitor = Session(loopback_config(tmp_path, "a"))
    srv.monitors.message_sessions.add(monitor)
    srv.deliver_items(ORIGIN, 3, None, items())
    lines = bytes(monitor.out._buf).splitlines()
    assert len(lines) == len(items())
    assert all(json.loads(line)["event"] == "delivered" for line in lines)
    assert len(bytes(sessions[0].out._buf).splitlines()) == len(items())


async def test_wants_says_whether_deliver_queues_anything(tmp_path: Path) -> None:
    # The publishing node builds a message for its own apps only when one wants it.
    srv, sessions = server(tmp_path)
    for session in sessions:
        srv._subs.all.discard(session)  # none of all topics: the names and patterns decide
    for topic in ("a/x", "a/y", "a/x/z", "b", "c", "a"):
        assert srv.wants(topic) == bool(srv._subs.targets(topic)), topic
    assert srv.wants("a/y")
    assert not srv.wants("c")
    monitor = Session(loopback_config(tmp_path, "a"))
    srv.monitors.message_sessions.add(monitor)
    assert srv.wants("c")  # a monitoring session sees every message delivered
