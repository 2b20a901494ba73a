"""The ``subscribe`` and ``unsubscribe`` side of the API server (``server.ApiServer``
takes these methods): topics added and removed, and a ``subscribe`` with ``since`` or
retained messages checked, then replayed before its reply (``replaying.Replayer``)."""

from __future__ import annotations

import trio

from ..config.settings import NodeConfig
from .protocol import ApiError, Scalar, encode_reply, parse_since
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

    def _send_event(self, session: Session, line: bytes) -> None:
        raise NotImplementedError

    def _subscribe(self, session: Session, topics: list[str], req_id: Scalar) -> None:
        if not topics:
            session.all_topics = True
            self._subs.all.add(session)
            return
        if len(session.topics | set(topics)) > MAX_TOPICS_PER_CLIENT:
            raise ApiError("bad_request", f"at most {MAX_TOPICS_PER_CLIENT} topics per client",
                           req_id)
        for topic in topics:
            session.topics.add(topic)
            self._subs.add(session, topic)

    def _check_replay(self, session: Session, topics: list[str], since: str | float | None,
                      req_id: Scalar, retained: bool) -> ReplayRequest:
        """Check a ``subscribe`` with ``since`` or retained messages before it waits for its
        turn. Raises ``ApiError`` (bad_request, rate_limited): then nothing is subscribed."""
        start = parse_since(since, req_id) if since is not None else None
        if len(session.topics | set(topics)) > MAX_TOPICS_PER_CLIENT:
            raise ApiError("bad_request", f"at most {MAX_TOPICS_PER_CLIENT} topics per client",
                           req_id)
        if start is not None and not session.replay_bucket.take(1, trio.current_time()):
            self.stats.rate_limited += 1
            raise rate_error(self.config.client_replays_per_s, req_id)
        return ReplayRequest(req_id, topics, start, retained)

    async def _replay(self, session: Session, req: ReplayRequest) -> None:
        """Subscribe and replay history (``Replayer.run``): the replayed events, the
        reply, then the live events that came meanwhile."""
        fields, backlog = await self._replayer.run(
            session, req, lambda: self._subscribe(session, req.topics, req.req_id))
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
