"""The node's membership service: the member list (this node included), tags, the merge
of what peers say, the failure detector's decisions, and member events to listeners.
No I/O, no trio: the node's glue (``node.membership``) feeds it frames and time, and
sends what it puts in ``outbox`` (the clock is the caller's: ``clock``).

Its interface for the API, the CLI and the event handlers:

- ``members()``: every member known, this node included;
- ``set_tags(set_, delete)``: change this node's tags at run time;
- ``set_interest(patterns)``: what this node's apps subscribe to (its record says it);
- ``interests``: every live member's interest (``gossip.interest.Interests``);
- ``add_listener(fn)``: ``fn(kind, member)`` on each member event (``EVENT_KINDS``);
  returns a function that removes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..config.tags import changed_tags, tags_problem
from ..gossip.interest import Interests, summarize
from ..identity.keypair import NodeIdentity
from ..wire.messages import (
    MAX_MEMBERS_PER_FRAME,
    MemberDigest,
    MemberHash,
    Members,
    SignedClaim,
    SignedMember,
)
from ..wire.topics import subscription_problem
from .detector import Detector, DetectorConfig
from .info import EVENT_KINDS, STATES, Listener, MemberInfo
from .interestgate import InterestGate
from .pacing import Pacer
from .records import ClaimBody, MemberBody, member_id, sign_claim, sign_member
from .table import LIVE, Allow, MemberTable, allow_all

__all__ = ["EVENT_KINDS", "STATES", "MemberInfo", "MemberLimits", "Membership"]

FloodItem = SignedMember | SignedClaim


@dataclass(frozen=True)
class MemberLimits:
    """The bounds and timings of the member list (``NodeConfig``'s ``member_*``)."""

    max_members: int = 4096
    reap: float = 3600.0  # dead and left members are forgotten after this long
    max_suspectors: int = 8  # confirmations of one suspicion kept and flooded
    #: New records of one member flooded on per second (bursts: ``record_burst``); the
    #: newest over that waits (docs/interest.md, "Bounds and attackers").
    record_rate: float = 2.0
    record_burst: float = 8.0
    detector: DetectorConfig = field(default_factory=DetectorConfig)


class Membership:
    """The member list of one node.

    Args:
        me: this node's own record (``this_node`` True); its ``incarnation`` is the
            start value (the node's start time in microseconds).
        identity: signs this node's record and its claims; without it the list holds
            this node alone and nothing is sent (tests of the interface).
        limits: bounds and timings.
        clock: the caller's clock (trio's in the node).
        seed: seeds the random choices (probe helpers, nonces).
    """

    def __init__(self, me: MemberInfo, *, identity: NodeIdentity | None = None,
                 limits: MemberLimits | None = None,
                 clock: Callable[[], float] = lambda: 0.0, seed: int | None = None) -> None:
        self.me = me
        self.identity = identity
        self.limits = limits or MemberLimits()
        self.clock = clock
        self._listeners: list[Listener] = []
        #: What every live member (alive or suspect, this node included) subscribes to,
        #: kept up to date from their records; dead and left members are taken out.
        self.interests = Interests()
        #: Feeds ``interests``: each member's changes at most ``INTEREST_RATE`` a second.
        self.interest_gate = InterestGate(self.interests, me.node_id)
        #: Other members' new records, flooded on at ``record_rate`` each: a member that
        #: signs records as fast as its links take them costs its neighbours, not the mesh.
        self.record_pacer: Pacer[bytes, tuple[SignedMember, bytes]] = Pacer(
            self.limits.record_rate, self.limits.record_burst)
        self.table = MemberTable(me.node_id, max_members=self.limits.max_members,
                                 max_suspectors=self.limits.max_suspectors,
                                 emit=self.emit, on_self=self._refute)
        self.detector = Detector(self.limits.detector, random.Random(seed))
        #: Records and claims that changed the table, with the peer they came from
        #: (None: made here), to flood to every other link (the glue empties it).
        self.outbox: list[tuple[FloodItem, bytes | None]] = []
        #: Called when ``outbox`` gets something outside ``receive`` (tags, timers).
        self.on_outbox: Callable[[], None] | None = None
        self.refutations = 0  # times this node said it is alive after a suspicion
        self._next_reap = 0.0
        self._sign_self()

    # -- the interface ---------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        """Every member known, this node included."""
        infos = [entry.info for entry in self.table.entries.values()]
        return infos if self.me.node_id in self.table.entries else [self.me, *infos]

    def set_tags(self, set_: Mapping[str, str], delete: Iterable[str] = ()) -> None:
        """Set and delete tags of this node. Raises ``ValueError`` if the result breaks
        the bounds (``config.tags.tags_problem``); then nothing changes."""
        tags = changed_tags(self.me.tags, set_, delete)
        if (problem := tags_problem(tags)) is not None:
            raise ValueError(problem)
        self.me.tags = tags
        self.me.incarnation += 1
        self._flood_self()
        self.emit("member_update", self.me)

    def set_interest(self, patterns: Iterable[str] | None) -> bool:
        """This node's apps subscribe to ``patterns`` (valid subscriptions; None: every
        topic): its record says so (``gossip.interest.summarize``: more than 64 say every
        topic), with a new incarnation, flooded. Returns whether the record changed.
        The caller gathers bursts (``node.interests``: at most one change a second).
        Raises ``ValueError`` for a pattern an app could not subscribe to."""
        summary = None if patterns is None else summarize(patterns)
        for pattern in summary or ():
            if (problem := subscription_problem(pattern)) is not None:
                raise ValueError(problem)
        me = self.me
        if summary == me.interests:
            return False
        me.interests = summary
        me.incarnation += 1
        try:
            self._flood_self()
        except ValueError:  # over the record's 4 KiB with the tags: say every topic
            me.interests = None
            self._flood_self()
        self.emit("member_update", me)
        return True

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call ``fn(kind, member)`` on every member event; returns its remover."""
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)
        return remove

    def emit(self, kind: str, member: MemberInfo) -> None:
        """Tell every listener (a listener's error is its own: not raised here)."""
        self._index(member)
        for fn in list(self._listeners):
            fn(kind, member)

    def _index(self, member: MemberInfo) -> None:
        """Keep ``interests`` up to date with ``member``'s record and state (through the
        gate: a member's changes at most ``INTEREST_RATE`` a second)."""
        if member.state in LIVE:
            # (This node's own is never held: no clock needed, the node may not run yet.)
            now = 0.0 if member.node_id == self.me.node_id else self.clock()
            self.interest_gate.set(member.node_id, member.interests, now)
        else:  # when it went: catch-up sends what it missed if it comes back
            self.interest_gate.remove(member.node_id, self.clock())

    # -- this node's record ------------------------------------------------------------

    def _sign_self(self) -> SignedMember | None:
        if self.identity is None:
            self._index(self.me)
            return None
        me = self.me
        body = MemberBody(me.name, list(me.addrs), me.version, me.network, dict(me.tags),
                          me.incarnation, "left" if me.state == "left" else "alive",
                          None if me.interests is None else list(me.interests))
        record = sign_member(self.identity, body)
        self.table.set_self(record, body, me)
        self._index(me)
        return record

    def _flood_self(self) -> None:
        record = self._sign_self()
        if record is not None:
            self.outbox.append((record, None))
            if self.on_outbox is not None:
                self.on_outbox()

    def start(self, addrs: list[str], now: float) -> None:
        """The node listens on ``addrs``: its record says so from now on."""
        self.me.addrs = list(addrs)
        self.me.since = now
        self._sign_self()

    def leave(self) -> SignedMember | None:
        """This node leaves gracefully: its ``left`` record (incarnation + 1), to send on
        every link before saying goodbye."""
        self.me.state = "left"
        self.me.incarnation += 1
        return self._sign_self()

    def _refute(self, incarnation: int, state: str) -> None:
        """Someone says this node is suspect, dead or gone (or an old run of it is newer):
        say it is alive, with a higher incarnation."""
        if self.me.state == "left":
            return
        self.me.incarnation = max(self.me.incarnation, incarnation) + 1
        self.refutations += 1
        self._flood_self()

    # -- what peers send -----------------------------------------------------------------

    def receive(self, msg: Members, peer: bytes, now: float,
                allow: Allow | None = None) -> int:
        """Records and claims from ``peer``: merge them; what changed the table goes to
        ``outbox`` (another member's records at ``record_rate`` each: the newest over
        that waits for ``tick``). ``allow()`` is asked before each signature check (the
        caller's rate limit): what it refuses is dropped. Returns how many were dropped so. Raises
        ``RemoteProtocolError`` (a bad body or signature) after taking what came before
        it."""
        table, outbox = self.table, self.outbox
        ok = allow or allow_all
        limited = 0
        for record in msg.records:
            outcome = table.add_record(record, now, ok)
            if outcome == "changed":
                if self.record_pacer.offer(member_id(record), (record, peer), now):
                    outbox.append((record, peer))
                # (Also when no event comes: a newer record under a suspicion.)
                entry = table.entries.get(member_id(record))
                if entry is not None:
                    self._index(entry.info)
            limited += outcome == "limited"
        for claim in msg.claims:
            outcome = table.add_claim(claim, now, ok)
            if outcome in ("changed", "confirmed"):
                outbox.append((claim, peer))
            limited += outcome == "limited"
        return limited

    def digest(self, *, ask: bool = False) -> MemberDigest:
        """The live members this node knows (sent when a link opens)."""
        return MemberDigest(self.table.digest(), ask)

    def summary(self) -> MemberHash:
        """The hash of the live members (sent to a random link now and then)."""
        return MemberHash(*self.table.summary())

    def answer(self, digest: MemberDigest) -> list[Members]:
        """What the peer that sent ``digest`` lacks or has older, in frames."""
        return pack(*self.table.missing_from(digest.entries))

    # -- the failure detector ------------------------------------------------------------

    def _claim(self, target: bytes, state: str, now: float) -> None:
        entry = self.table.entries.get(target)
        if self.identity is None or entry is None:
            return
        claim = sign_claim(self.identity, ClaimBody(target, entry.info.incarnation,
                                                    state))  # type: ignore[arg-type]
        if self.table.add_claim(claim, now) in ("changed", "confirmed"):
            self.outbox.append((claim, None))
            if self.on_outbox is not None:
                self.on_outbox()

    def suspect(self, target: bytes, now: float) -> None:
        """No one vouched for ``target``: suspect it (and flood that)."""
        entry = self.table.entries.get(target)
        if entry is not None and entry.info.state in ("alive", "suspect"):
            self._claim(target, "suspect", now)

    def tick(self, now: float) -> None:
        """Run the timers: probes that found no one suspect their target, suspicions not
        refuted in time declare it dead, and old dead and left members are forgotten."""
        self.interest_gate.tick(now)
        for nid, (record, peer) in self.record_pacer.due(now):
            entry = self.table.entries.get(nid)
            if entry is not None and entry.record is record:  # still the newest
                self.outbox.append((record, peer))
        for target in self.detector.expired(now):
            self.suspect(target, now)
        for target in list(self.table.suspects):
            if now >= self._suspicion_deadline(target):
                self._claim(target, "dead", now)
        if now >= self._next_reap:
            self._next_reap = now + min(60.0, self.limits.reap / 4)
            self.table.reap(now, self.limits.reap)

    def _suspicion_deadline(self, target: bytes) -> float:
        entry = self.table.entries[target]
        timeout = self.detector.suspicion_timeout(self.table.live_count(),
                                                  len(entry.suspectors) - 1)
        return entry.suspected_at + timeout

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next (None: nothing pending)."""
        times = [self._suspicion_deadline(t) for t in self.table.suspects]
        for deadline in (self.detector.next_deadline(), self.interest_gate.next_deadline(),
                         self.record_pacer.next_deadline()):
            if deadline is not None:
                times.append(deadline)
        return min(times, default=None)


#: The most record bytes in one Members frame: well within the smallest ``max_frame``
#: (160 KiB), whatever the records' sizes (64 records of 4 KiB would not be).
FRAME_BUDGET = 96 * 1024


def pack(records: list[SignedMember], claims: list[SignedClaim]) -> list[Members]:
    """``records`` and ``claims`` in as few ``Members`` frames as the bounds allow (at
    most 64 of each and ``FRAME_BUDGET`` bytes of records per frame; records before
    the claims about them)."""
    groups: list[list[SignedMember]] = []
    size = 0
    for record in records:
        cost = len(record.body) + 110  # the key, the signature, the framing
        if not groups or len(groups[-1]) == MAX_MEMBERS_PER_FRAME or size + cost > FRAME_BUDGET:
            groups.append([])
            size = 0
        groups[-1].append(record)
        size += cost
    step = MAX_MEMBERS_PER_FRAME
    claim_groups = [claims[i:i + step] for i in range(0, len(claims), step)]
    count = max(len(groups), len(claim_groups))
    return [Members(groups[i] if i < len(groups) else [],
                    claim_groups[i] if i < len(claim_groups) else []) for i in range(count)]
