"""The member table: every member a node knows, merged by the SWIM rules, bounded.

``MemberTable`` takes signed records and claims (``records``), keeps for each member
its newest record and the claim (suspect, dead) that overrides it, and says whether
each one changed the table (then the caller floods it on). Records and claims that
cannot change anything are dropped before their signature is checked. The table also
answers the anti-entropy messages: a digest of its live members, a hash of them, and
what a peer's digest lacks. Pure: the clock is the caller's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from ..identity.keypair import node_id_of
from ..wire.messages import MemberEntry, SignedClaim, SignedMember
from .info import MemberInfo
from .records import (
    STATE_CODES,
    ClaimBody,
    MemberBody,
    beats,
    decode_claim,
    decode_member,
    verify_claim,
    verify_member,
)

STATE_NAMES = {code: name for name, code in STATE_CODES.items()}
LIVE = ("alive", "suspect")
#: What the table says of a record or claim it was given.
Outcome = str  # "changed", "confirmed", "stale", "refused", "unknown", "self", "limited"
#: Asked before each signature check: False drops the record or claim unchecked
#: (``limited``; the caller's rate limit).
Allow = Callable[[], bool]


def allow_all() -> bool:
    return True


@dataclass
class Entry:
    """One member in the table."""

    info: MemberInfo
    record: SignedMember
    body: MemberBody
    claim: SignedClaim | None = None  # the claim that made it suspect or dead
    suspectors: set[bytes] = field(default_factory=set)  # who claimed suspect at this incarnation
    suspected_at: float = 0.0  # caller's time the suspicion began


@dataclass
class TableStats:
    """What the table took and dropped."""

    records: int = 0  # records that changed the table
    claims: int = 0  # claims that changed the table (confirmations included)
    stale: int = 0  # records and claims dropped unchecked: nothing new in them
    bad_signature: int = 0
    limited: int = 0  # records and claims dropped unchecked: ``allow`` said no
    refused: int = 0  # new members refused: the table was full of live members
    unknown: int = 0  # claims about members this node does not know
    reaped: int = 0  # dead and left members forgotten after ``reap`` seconds


def entry_hash(node_id: bytes, incarnation: int, state: str) -> int:
    """A member's share of the table hash (the hash is the XOR of the live members')."""
    data = node_id + incarnation.to_bytes(8, "big") + bytes((STATE_CODES[state],))
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


class MemberTable:
    """Every member known, this node included (its entry is the caller's to set).

    Args:
        me: this node's id (records and claims about it go to ``on_self``).
        max_members: the most members kept; when full, dead and left ones make room,
            live ones never do (the new one is refused).
        max_suspectors: confirmations of one suspicion kept (and flooded) at most.
        emit: called with (event kind, member) on each change (``service.EVENT_KINDS``).
        on_self: called with (incarnation, state) when a verified record or claim about
            this node says something newer than its own record (the caller refutes).
    """

    def __init__(self, me: bytes, *, max_members: int, max_suspectors: int,
                 emit: Callable[[str, MemberInfo], None],
                 on_self: Callable[[int, str], None]) -> None:
        self.me = me
        self.max_members = max_members
        self.max_suspectors = max_suspectors
        self.entries: dict[bytes, Entry] = {}
        self._by_id8: dict[bytes, bytes] = {}
        self._emit = emit
        self._on_self = on_self
        self._hash = 0
        self._live = 0
        #: The members now suspect (their suspicion timers run).
        self.suspects: set[bytes] = set()
        self.stats = TableStats()

    # -- the summary -------------------------------------------------------------------

    def _account(self, entry: Entry, sign: int) -> None:
        """Add (1) or remove (-1) the entry's share of the hash and live count."""
        info = entry.info
        if info.state in LIVE:
            self._hash ^= entry_hash(info.node_id, info.incarnation, info.state)
            self._live += sign
        if info.state == "suspect":
            if sign > 0:
                self.suspects.add(info.node_id)
            else:
                self.suspects.discard(info.node_id)

    def summary(self) -> tuple[bytes, int]:
        """The table hash (16 bytes) and the count of live members."""
        return self._hash.to_bytes(16, "big"), self._live

    def digest(self) -> list[MemberEntry]:
        """The live members, as a ``MemberDigest`` lists them."""
        return [MemberEntry(nid[:8], e.info.incarnation, STATE_CODES[e.info.state])
                for nid, e in self.entries.items() if e.info.state in LIVE]

    def missing_from(self, entries: list[MemberEntry]) -> tuple[list[SignedMember],
                                                                 list[SignedClaim]]:
        """What a peer whose digest is ``entries`` lacks or has older: records (and the
        claims that override them) of members newer here, and of live members it does
        not list."""
        theirs = {e.id8: e for e in entries}
        records: list[SignedMember] = []
        claims: list[SignedClaim] = []
        for nid, entry in self.entries.items():
            info = entry.info
            other = theirs.get(nid[:8])
            if other is None:
                if info.state not in LIVE:
                    continue
            elif not beats(info.incarnation, info.state, other.incarnation,
                           STATE_NAMES[other.state]):
                continue
            if other is None or other.incarnation < entry.body.incarnation:
                records.append(entry.record)
            if entry.claim is not None:
                claims.append(entry.claim)
        return records, claims

    # -- records and claims ------------------------------------------------------------

    def set_self(self, record: SignedMember, body: MemberBody, info: MemberInfo) -> None:
        """Put this node's own (newly signed) record in the table."""
        old = self.entries.get(self.me)
        if old is not None and old.body.state in LIVE:
            # Not ``_account(old, -1)``: ``info`` is this node's own MemberInfo, which
            # the caller changed already (incarnation, state, tags): the old share of the
            # hash is the old signed body's.
            self._hash ^= entry_hash(self.me, old.body.incarnation, old.body.state)
            self._live -= 1
        entry = Entry(info, record, body)
        self.entries[self.me] = entry
        self._by_id8.setdefault(self.me[:8], self.me)
        self._account(entry, 1)

    def add_record(self, record: SignedMember, now: float, allow: Allow = allow_all) -> Outcome:
        """Take a member's record. ``allow()`` is asked before its signature is checked
        (only a record that may change something is). Raises ``RemoteProtocolError``
        (bad body or signature)."""
        nid = node_id_of(record.key)
        body = decode_member(record)
        entry = self.entries.get(nid)
        if nid == self.me:
            return self._record_about_me(record, body, allow)
        if entry is not None and body.incarnation <= entry.body.incarnation and not beats(
                body.incarnation, body.state, entry.info.incarnation, entry.info.state):
            self.stats.stale += 1
            return "stale"
        if entry is None and not self._room_for(nid):
            return "refused"
        if not self._verify(verify_member, record, allow):
            return "limited"
        self.stats.records += 1
        if entry is None:
            self._insert(nid, record, body, now)
        else:
            self._update(entry, record, body, now)
        return "changed"

    def _record_about_me(self, record: SignedMember, body: MemberBody,
                         allow: Allow) -> Outcome:
        mine = self.entries.get(self.me)
        if mine is not None and beats(body.incarnation, body.state,
                                      mine.info.incarnation, mine.info.state):
            if not self._verify(verify_member, record, allow):
                return "limited"
            self._on_self(body.incarnation, body.state)
        return "self"

    def _verify(self, check: Callable[[SignedMember], MemberBody]
                | Callable[[SignedClaim], ClaimBody], item: SignedMember | SignedClaim,
                allow: Allow) -> bool:
        """Check ``item``'s signature if ``allow()`` lets it (False: not checked, to be
        dropped). Raises ``RemoteProtocolError`` for a bad one."""
        if not allow():
            self.stats.limited += 1
            return False
        try:
            check(item)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:
            if exc.code == "bad_signature":
                self.stats.bad_signature += 1
            raise
        return True

    def _room_for(self, nid: bytes) -> bool:
        """Whether a new member fits (making room by forgetting the oldest dead or left
        member if needed); counts a refusal if not."""
        if nid[:8] in self._by_id8:
            self.stats.refused += 1  # another member has the same 8-byte prefix
            return False
        if len(self.entries) < self.max_members:
            return True
        gone = [e for e in self.entries.values() if e.info.state not in LIVE]
        if not gone:
            self.stats.refused += 1
            return False
        self._forget(min(gone, key=lambda e: e.info.since).info.node_id)
        return True

    def _insert(self, nid: bytes, record: SignedMember, body: MemberBody, now: float) -> None:
        info = MemberInfo(nid, body.name, list(body.addrs), body.version, body.network,
                          dict(body.tags), body.incarnation, body.state, since=now,
                          interests=body.interest)
        entry = Entry(info, record, body)
        self.entries[nid] = entry
        self._by_id8[nid[:8]] = nid
        self._account(entry, 1)
        if body.state == "alive":
            self._emit("member_join", info)

    def _update(self, entry: Entry, record: SignedMember, body: MemberBody, now: float) -> None:
        info = entry.info
        entry.record, entry.body = record, body
        info.name, info.addrs, info.version = body.name, list(body.addrs), body.version
        info.network, info.tags, info.interests = body.network, dict(body.tags), body.interest
        if not beats(body.incarnation, body.state, info.incarnation, info.state):
            return  # a newer record under a newer claim: the claim still stands
        old = info.state
        self._account(entry, -1)
        info.incarnation, info.state = body.incarnation, body.state
        entry.claim = None
        entry.suspectors.clear()
        self._account(entry, 1)
        if body.state == "left":
            info.since = now
            self._emit("member_left", info)
        elif old in ("dead", "left"):
            info.since = now
            self._emit("member_join", info)
        else:
            if old != "alive":
                info.since = now
            self._emit("member_update", info)

    def add_claim(self, claim: SignedClaim, now: float, allow: Allow = allow_all) -> Outcome:
        """Take a claim (suspect, dead) about a member. ``confirmed``: another member
        suspects one already suspect (counted toward its timeout). ``allow`` as for
        ``add_record``. Raises ``RemoteProtocolError`` (bad body or signature)."""
        body = decode_claim(claim)
        claimer = node_id_of(claim.key)
        entry = self.entries.get(body.about)
        if entry is None:
            self.stats.unknown += 1
            return "unknown"
        info = entry.info
        if claimer == body.about or body.incarnation > entry.body.incarnation:
            self.stats.stale += 1
            return "stale"  # claims are about an incarnation the claimer has a record of
        if body.about == self.me:
            return self._claim_about_me(claim, body, allow)
        if beats(body.incarnation, body.state, info.incarnation, info.state):
            if not self._verify(verify_claim, claim, allow):
                return "limited"
            self._apply_claim(entry, claim, body, claimer, now)
            return "changed"
        if (body.state == info.state == "suspect" and body.incarnation == info.incarnation
                and claimer not in entry.suspectors
                and len(entry.suspectors) < self.max_suspectors):
            if not self._verify(verify_claim, claim, allow):
                return "limited"
            entry.suspectors.add(claimer)
            self.stats.claims += 1
            return "confirmed"
        self.stats.stale += 1
        return "stale"

    def _claim_about_me(self, claim: SignedClaim, body: ClaimBody, allow: Allow) -> Outcome:
        mine = self.entries[self.me]
        if beats(body.incarnation, body.state, mine.info.incarnation, mine.info.state):
            if not self._verify(verify_claim, claim, allow):
                return "limited"
            self._on_self(body.incarnation, body.state)
        return "self"

    def _apply_claim(self, entry: Entry, claim: SignedClaim, body: ClaimBody, claimer: bytes,
                     now: float) -> None:
        info = entry.info
        self.stats.claims += 1
        self._account(entry, -1)
        info.incarnation, info.state, info.since = body.incarnation, body.state, now
        self._account(entry, 1)
        entry.claim = claim
        entry.suspectors = {claimer} if body.state == "suspect" else set()
        entry.suspected_at = now
        self._emit("member_suspect" if body.state == "suspect" else "member_dead", info)

    # -- forgetting ------------------------------------------------------------------

    def _forget(self, nid: bytes) -> None:
        entry = self.entries.pop(nid)
        self._account(entry, -1)
        if self._by_id8.get(nid[:8]) == nid:
            del self._by_id8[nid[:8]]

    def reap(self, now: float, after: float) -> list[bytes]:
        """Forget dead and left members whose state is older than ``after`` seconds;
        returns their ids."""
        gone = [nid for nid, e in self.entries.items()
                if e.info.state not in LIVE and now - e.info.since >= after and nid != self.me]
        for nid in gone:
            self._forget(nid)
        self.stats.reaped += len(gone)
        return gone

    def live_count(self) -> int:
        """How many members are alive or suspect (this node included)."""
        return self._live
