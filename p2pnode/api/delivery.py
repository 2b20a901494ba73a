"""Delivery of messages to the API's subscribers (``server.ApiServer`` takes these
methods): synchronous, on the hot path. An event that does not fit in a subscriber's
queue is dropped and counted; ``seen`` (a resumed subscription's last id per origin
run) keeps back what the app got already."""

from __future__ import annotations

from ..wire.messages import Gossip, Item
from .monitor import MonitorHub
from .protocol import encode_delivered, encode_event, encode_events
from .session import ApiStats, Session
from .subscribers import Subscribers, topic_runs

__all__ = ["DeliveryOps"]


class DeliveryOps:
    """Delivery of an ``ApiServer``, which provides the state below."""

    stats: ApiStats
    monitors: MonitorHub[Session]
    _subs: Subscribers[Session]
    _touched: set[Session]
    _holding: bool  # in a read of a link: queued events wait for ``send_touched``

    def deliver(self, msg: Gossip, reply_to: bytes | None = None,
                timeout: float | None = None) -> None:
        """Hand ``msg`` to every subscriber of its topic, by name or by a pattern that
        matches it, once each (and a ``delivered`` event to the monitoring sessions
        that asked for one). A request comes with its ``reply_to`` token and ``timeout``."""
        if self.monitors.message_sessions:
            self.monitors.deliver(encode_delivered(msg))
        targets = self._subs.targets(msg.topic)
        if targets:
            line = encode_event(msg, reply_to=reply_to, timeout=timeout)
            for session in targets:
                if session.seen is None or session.fresh(msg.id):
                    self._send_event(session, line)

    def deliver_items(self, origin: bytes, hops: int, to: bytes | None,
                      items: list[Item]) -> None:
        """``deliver`` for each of ``items``, messages of one batch (not requests): each
        run of them of one topic is encoded at once and queued in one piece where it
        fits (else line by line, as ``deliver`` would)."""
        if self.monitors.message_sessions:
            for item in items:
                self.deliver(Gossip(item.id, origin, item.topic, item.data, hops, to=to))
            return
        for topic, run in topic_runs(items):
            targets = self._subs.targets(topic)
            if targets:
                lines = encode_events(origin, hops, to, run)
                for session in targets:
                    out = session.out
                    if session.seen is None and session.backlog is None and \
                            not session.unreported and len(out) + len(lines) <= out.limit \
                            and out.put_nowait(lines, wake=not self._holding):
                        self._touched.add(session)
                        continue
                    for item, line in zip(run, lines.splitlines(keepends=True), strict=True):
                        if session.seen is None or session.fresh(item.id):
                            self._send_event(session, line)

    def wants(self, topic: str) -> bool:
        """Whether ``deliver`` of a message of ``topic`` would queue anything."""
        return bool(self.monitors.message_sessions) or self._subs.wants(topic)

    def _send_event(self, session: Session, line: bytes) -> None:
        """Queue an event line; when the subscriber's queue is full, drop it and count it.
        The next event that fits is preceded by ``{"event":"dropped","count":N}``.
        While the session's replay runs, the line waits in its backlog."""
        if session.backlog is not None:
            session.backlog.add(line)
            return
        out = session.out
        wake = not self._holding
        if session.unreported and out.put_nowait(
            b'{"event":"dropped","count":%d}\n' % session.unreported, wake=wake
        ):
            session.unreported = 0
        if session.unreported or not out.put_nowait(line, wake=wake):
            session.events_dropped += 1
            session.unreported += 1
            self.stats.events_dropped += 1
        self._touched.add(session)

    def hold_wakes(self) -> None:
        """A read of a link begins: the events it queues wake no writer task until
        ``send_touched`` (which writes most of them itself)."""
        self._holding = True

    def send_touched(self) -> None:
        """Write the events queued since the last call to their sockets at once, as far
        as each socket takes them without waiting (``OutQueue.try_send``), and wake the
        writer task of a session only for what its socket did not take: called once per
        read of a link, this spares each event the wake-up of its session's writer
        task. A session that has ended is no longer in ``_touched``."""
        self._holding = False
        for session in self._touched:
            session.out.try_send(session.fd)
            session.out.wake()
        self._touched.clear()

