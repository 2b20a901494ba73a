"""The ``subscribe`` and ``unsubscribe`` side of the API server (``server.ApiServer``
takes these methods): topics added and removed, and a ``subscribe`` with ``since`` or
retained messages checked, then replayed before its reply (``replaying.Replayer``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

from ..config.settings import NodeConfig
from ..gossip.interest import summarize
from .durables import Durables
from .protocol import ApiError, Scalar, Subscribe, encode_reply, parse_seen, parse_since
from .replaying import Replayer, ReplayRequest, rate_error
from .session import ApiStats, Session
from .subscribers import Subscribers

__all__ = ["MAX_TOPICS_PER_CLIENT", "SubscribeOps"]

#: Topics (patterns) one connection may subscribe to at most.
MAX_TOPICS_PER_CLIENT = 4096


class SubscribeOps:
    """Subscriptions of API sessions; ``ApiServer`` provides the state below."""

    config: NodeConfig
    stats: ApiStats
    _subs: Subscribers[Session]
    _replayer: Replayer
    durables: Durables
    on_interest: Callable[[], None] | None

    def interest(self) -> list[str] | None:
        """What this node's apps subscribe to, as its member record says it: the topic
        names and patterns of the sessions and of the durable subscriptions (each once,
        sorted: ``gossip.interest.summarize``), or None for every topic (an all-topics
        subscriber, or more than ``MAX_PATTERNS``)."""
        live = self._subs.subscriptions()
        durable = self.durables.topics.values()
        if live is None or not all(durable):
            return None
        return summarize(itertools.chain(live, *durable))

    def live_interest(self) -> list[str] | None:
        """What the sessions subscribe to (``interest`` without the durable
        subscriptions), each once, sorted; None: every topic, or too many."""
        live = self._subs.subscriptions()
        return None if live is None else summarize(live)

    def _interest_changed(self) -> None:
        if self.on_interest is not None:
            self.on_interest()

    def _send_event(self, session: Session, line: bytes) -> None:
        raise NotImplementedError

    def _subscribe(self, session: Session, topics: list[str], req_id: Scalar) -> None:
        if not topics:
            session.all_topics = True
            self._subs.all.add(session)
        elif len(session.topics | set(topics)) > MAX_TOPICS_PER_CLIENT:
            raise ApiError("bad_request", f"at most {MAX_TOPICS_PER_CLIENT} topics per client",
                           req_id)
        for topic in topics:
            session.topics.add(topic)
            self._subs.add(session, topic)
        self._interest_changed()  # after: the node notes when each subscription began

    def _check_replay(self, session: Session, topics: list[str], req: Subscribe,
                      retained: bool) -> ReplayRequest:
        """Check a ``subscribe`` with ``since`` or retained messages before it waits for its
        turn. Raises ``ApiError`` (bad_request, rate_limited): then nothing is subscribed."""
        req_id = req.id
        if req.seen is not None and req.since is None:
            raise ApiError("bad_request", "seen goes with since (the last message id the "
                           "app got)", req_id)
        start = parse_since(req.since, req_id) if req.since is not None else None
        seen = parse_seen(req.seen, req_id) if req.seen else None
        if len(session.topics | set(topics)) > MAX_TOPICS_PER_CLIENT:
            raise ApiError("bad_request", f"at most {MAX_TOPICS_PER_CLIENT} topics per client",
                           req_id)
        if start is not None and not session.replay_bucket.take(1, trio.current_time()):
            self.stats.rate_limited += 1
            raise rate_error(self.config.client_replays_per_s, req_id)
        return ReplayRequest(req_id, topics, start, retained, seen)

    async def _replay(self, session: Session, req: ReplayRequest) -> None:
        """Subscribe and replay history (``Replayer.run``): the replayed events, the
        reply, then the live events that came meanwhile."""
        def subscribe() -> None:
            self._subscribe(session, req.topics, req.req_id)
            if req.seen:  # live messages too: from now on (a copy: it shrinks)
                session.seen = {**(session.seen or {}), **req.seen}

        fields, backlog = await self._replayer.run(session, req, subscribe)
        self.stats.replays += req.start is not None
        dropped = fields.get("dropped", 0) + backlog.dropped
        self.stats.events_dropped += dropped
        session.events_dropped += dropped
        session.order.put(encode_reply(req.req_id, fields))
        for line in backlog.lines:
            self._send_event(session, line)
        session.unreported += backlog.dropped  # announced before the next event that fits

    def _unsubscribe(self, session: Session, topics: list[str]) -> None:
        if not topics:
            session.all_topics = False
            self._subs.all.discard(session)
            topics = list(session.topics)
        for topic in topics:
            session.topics.discard(topic)
            self._subs.discard(session, topic)
        self._interest_changed()
