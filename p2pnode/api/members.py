"""The member list in the API (``server.ApiServer`` takes these methods): the
``members`` op (the list, filtered by tags and state; ``watch`` for member events on
the connection) and the ``tags`` op (this node's tags changed at run time), answered
from the node's membership service (``members.Membership``; docs/api.md, "members").

Member events go to the watching connections as other events do: queued without
waiting, dropped and counted when a connection does not keep up.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import trio

from ..config.tags import MAX_TAGS, changed_tags, tag_problem, tags_problem
from ..members import MemberInfo, Membership
from ..members.service import STATES
from ..ratelimit import TokenBucket
from .member_requests import MembersOp, TagsOp
from .protocol import ApiError, Scalar, encode_reply
from .session import Session

__all__ = ["MEMBER_OPS", "TAG_CHANGES_PER_S", "MemberOps", "member_event"]

#: The requests ``MemberOps.member_request`` answers.
MEMBER_OPS = (MembersOp, TagsOp)
#: Changes of this node's tags the API takes per second (bursts: twice as many): each
#: one is a new member record that travels to every node.
TAG_CHANGES_PER_S = 10.0

_encode = msgspec.json.Encoder().encode


def member_event(kind: str, member: MemberInfo, now: float) -> bytes:
    """The event line of a member event: ``{"event": kind, "member": {...}}``."""
    return _encode({"event": kind, "member": member.to_dict(now)}) + b"\n"


def _states(state: str | list[str] | None, req_id: Scalar) -> frozenset[str] | None:
    if state is None:
        return None
    states = [state] if isinstance(state, str) else state
    if len(states) > len(STATES) or not set(states) <= set(STATES):
        raise ApiError("bad_request", f"state is one of {', '.join(STATES)}, or a list of "
                       "them", req_id)
    return frozenset(states)


def _check_tags(tags: dict[str, str], what: str, req_id: Scalar) -> None:
    if len(tags) > MAX_TAGS:
        raise ApiError("bad_request", f"{what}: at most {MAX_TAGS} tags", req_id)
    for key, value in tags.items():
        if problem := tag_problem(key, value):
            raise ApiError("bad_request", f"{what}: {problem}", req_id)


class MemberOps:
    """The member ops of an ``ApiServer``, which provides the state below."""

    #: The node's membership service (asked for at each request: the node makes it
    #: after its API server).
    _membership: Callable[[], Membership]
    _member_watchers: set[Session]
    _member_unlisten: Callable[[], None] | None
    _tag_bucket: TokenBucket | None

    def _send_event(self, session: Session, line: bytes) -> None:
        raise NotImplementedError

    def member_request(self, session: Session, req: MembersOp | TagsOp) -> bytes:
        """Answer a ``members`` or ``tags`` request. Raises ``ApiError`` (bad_request,
        rate_limited)."""
        if type(req) is TagsOp:
            return self._tags(req)
        assert type(req) is MembersOp
        states = _states(req.state, req.id)
        want = req.tag or {}
        _check_tags(want, "tag", req.id)
        now = trio.current_time()
        members = sorted(
            (m for m in self._membership().members()
             if (states is None or m.state in states)
             and all(m.tags.get(k) == v for k, v in want.items())),
            key=lambda m: (m.name, m.node_id))
        if req.watch:
            self._watch(session)
        elif req.watch is False:
            self.unwatch_members(session)
        return encode_reply(req.id, {"members": [m.to_dict(now) for m in members]})

    def _tags(self, req: TagsOp) -> bytes:
        add, delete = req.set or {}, req.delete or []
        _check_tags(add, "set", req.id)
        if len(delete) > MAX_TAGS:
            raise ApiError("bad_request", f"delete: at most {MAX_TAGS} keys", req.id)
        for key in delete:
            if problem := tag_problem(key):
                raise ApiError("bad_request", f"delete: {problem}", req.id)
            if key in add:
                raise ApiError("bad_request", f"tag {key} is both set and deleted", req.id)
        membership = self._membership()
        now_tags = membership.me.tags
        tags = changed_tags(now_tags, add, delete)
        if problem := tags_problem(tags):
            raise ApiError("bad_request", f"this node's tags would be {problem}", req.id)
        if tags != now_tags:
            self._take_tag_change(req.id)
            try:
                membership.set_tags(add, delete)
            except ValueError as exc:  # the membership's own bounds (not expected)
                raise ApiError("bad_request", f"this node's tags: {exc}", req.id) from None
        return encode_reply(req.id, {"tags": dict(membership.me.tags)})

    def _take_tag_change(self, req_id: Scalar) -> None:
        now = trio.current_time()
        if self._tag_bucket is None:
            self._tag_bucket = TokenBucket(TAG_CHANGES_PER_S, 2 * TAG_CHANGES_PER_S, now)
        if not self._tag_bucket.take(1, now):
            raise ApiError("rate_limited", f"over {TAG_CHANGES_PER_S:g} changes of the "
                           "tags per second (each one travels to every node); slow down",
                           req_id)

    def _watch(self, session: Session) -> None:
        self._member_watchers.add(session)
        if self._member_unlisten is None:
            self._member_unlisten = self._membership().add_listener(self._member_event)

    def unwatch_members(self, session: Session) -> None:
        """``session`` no longer gets member events (it asked so, or it ended)."""
        self._member_watchers.discard(session)
        if not self._member_watchers and self._member_unlisten is not None:
            self._member_unlisten()
            self._member_unlisten = None

    def _member_event(self, kind: str, member: MemberInfo) -> None:
        line = member_event(kind, member, trio.current_time())
        for session in list(self._member_watchers):
            self._send_event(session, line)
