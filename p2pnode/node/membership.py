"""The membership service on the links (docs/protocol.md, "Membership"; docs/failures.md).

The pure ``members.Membership`` decides; this part carries it out over trio and the
links: it takes the member frames links bring (registered in ``Engine.handlers``,
charged to each link's ``member_rate``), floods what changed the member list once
per loop turn (one ``Members`` frame per link, never back where it came from), syncs
the list when a link opens (digests both ways) and every ``member_sync_interval``
(a hash to one random link), watches the links for silence and probes silent peers
through others (``ProbeReq``/``ProbeAck``), runs the detector's timers, and hands
the live members to the link manager as dial candidates (peer exchange).
"""

from __future__ import annotations

import logging
import random
import time
import weakref
from dataclasses import dataclass

import trio

from .. import PROTOCOL_VERSION
from ..config import NodeConfig
from ..config.settings import format_hostport, parse_hostport, valid_hostports
from ..discovery.interfaces import suitable_ipv4_addresses
from ..errors import ConfigError, RemoteProtocolError
from ..gossip.actions import Action
from ..identity.keypair import NodeIdentity
from ..members import MemberInfo, MemberLimits, Membership
from ..members.detector import DetectorConfig
from ..members.service import pack
from ..net.link import PeerLink
from ..net.manager import LinkManager
from ..ratelimit import TokenBucket
from ..wire.messages import (
    MEMBER_TYPES,
    GossipMessage,
    MemberDigest,
    MemberHash,
    Members,
    ProbeAck,
    ProbeReq,
    PxPeer,
    SignedClaim,
    SignedMember,
    WireMessage,
    encode_message,
)
from .engine import Engine

log = logging.getLogger("p2pnode.members")

#: Why a link closed when the peer may have failed: it went silent (``timeout``), its
#: connection ended without a Bye (``eof``, ``broken``), or nothing got through to it
#: (``slow_peer``). Only then is the peer probed, and only if the peer had taken the
#: link (``PeerLink.heard``). A Bye, a prune, a refusal (by either side: a full seed
#: refuses joiners by the hundred; one that arrives after a write to the closed peer
#: failed still counts: ``net.link.BROKEN_DRAIN``), a replaced connection or a peer
#: closed for misbehaving say nothing about whether it runs.
PROBE_CLOSES = frozenset({"timeout", "eof", "broken", "slow_peer"})
#: What a record or claim costs of its link's ``member_rate`` just to be looked at: one
#: that changes nothing is dropped before its signature check (a decode and a lookup,
#: about 1/30 of the check). One whose signature is checked costs 1 more.
LOOK_COST = 1 / 32
#: After records or claims from a link were dropped for ``member_rate``, this node sends
#: that link its digest again (the peer answers with what is still missing here) once
#: the link's bucket is full again: bursts are ``2 x member_rate``, so 2 s.
RESYNC_AFTER = 2.0


def member_service(config: NodeConfig, identity: NodeIdentity, network: str,
                   engine: Engine) -> tuple[Membership, MemberGlue]:
    """A node's member list and its glue. The incarnation starts at the run's start time
    (microseconds), so a restart's record beats the old run's. In interest mode the
    router reads the members' interests."""
    me = MemberInfo(identity.node_id, config.name, [], PROTOCOL_VERSION, network,
                    dict(config.tags), incarnation=time.time_ns() // 1000, this_node=True)
    membership = Membership(me, identity=identity, limits=member_limits(config),
                            clock=trio.current_time, seed=config.seed)
    if engine.router.interest is not None:
        engine.router.interest.interests = membership.interests
    return membership, MemberGlue(config, membership, engine, network)


def member_limits(config: NodeConfig) -> MemberLimits:
    """The member list's bounds and timings, from the node's settings."""
    return MemberLimits(
        max_members=config.max_members, reap=config.member_reap,
        max_suspectors=max(8, 2 * config.probe_k),
        detector=DetectorConfig(
            ping_interval=config.ping_interval, probe_k=config.probe_k,
            probe_timeout=config.probe_timeout, suspicion_min=config.suspicion_min,
            suspicion_mult=config.suspicion_mult))


@dataclass
class MemberStats:
    """What the glue sent and dropped."""

    frames_sent: int = 0  # member frames of every kind
    bytes_sent: int = 0
    rate_limited: int = 0  # records and claims dropped: a link sent over member_rate
    bad: int = 0  # links closed for a bad member frame (bad signature, over the bounds)
    probes_answered: int = 0
    probes_skipped: int = 0  # silent peers not probed: no other link was heard either


class MemberGlue:
    """Runs a node's ``Membership`` over its links.

    Args:
        config: the node's settings.
        membership: the member list.
        engine: the gossip path (member frames come through its handlers).
        network: this node's network tag (peers of another one are not dialled).
    """

    def __init__(self, config: NodeConfig, membership: Membership, engine: Engine,
                 network: str) -> None:
        self.config = config
        self.membership = membership
        self.engine = engine
        self.network = network
        self.links: LinkManager | None = None
        self.stats = MemberStats()
        self._rng = random.Random(config.seed)
        self._buckets: dict[bytes, tuple[TokenBucket, TokenBucket]] = {}
        self._silent: set[bytes] = set()
        #: Links that had member records dropped for member_rate: when to resync them.
        self._resync: dict[bytes, float] = {}
        #: Links closed for a bad member frame: the rest of their read is not taken.
        self._bad_links: weakref.WeakSet[PeerLink] = weakref.WeakSet()
        self._wake = trio.Event()
        for kind in MEMBER_TYPES:
            engine.handlers[kind] = self.on_message
        engine.on_link_change.append(self.link_changed)
        membership.on_outbox = self.wake
        membership.add_listener(self._exchange)

    def wake(self) -> None:
        """Flood what the member list put in its outbox once the current task yields."""
        self._wake.set()

    # -- sending ---------------------------------------------------------------------

    def _send(self, link: PeerLink, msg: WireMessage) -> None:
        self._send_frame(link, encode_message(msg))

    def _send_frame(self, link: PeerLink, frame: bytes) -> None:
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame)
        if not link.send(frame) and self.links is not None:
            self.links.stats.queue_drops += 1

    def flush(self) -> None:
        """Send the outbox: on each link, what did not come from it."""
        outbox = self.membership.outbox
        if not outbox or self.links is None:
            outbox.clear()
            return
        self.membership.outbox = []
        sources = {source for _, source in outbox}
        everything: list[bytes] | None = None
        for pid, link in list(self.links.links.items()):
            if pid in sources:
                frames = _frames([item for item, source in outbox if source != pid])
            else:
                if everything is None:
                    everything = _frames([item for item, _ in outbox])
                frames = everything
            for frame in frames:
                self._send_frame(link, frame)

    # -- receiving ---------------------------------------------------------------------

    def on_message(self, msg: GossipMessage, peer: bytes, now: float) -> list[Action]:
        """A member frame from ``peer`` (``Engine.handlers``)."""
        link = self.links.links.get(peer) if self.links is not None else None
        if link is None or link in self._bad_links:  # a bad frame earlier in this read
            return []
        try:
            if type(msg) is Members:
                self._on_members(msg, link, now)
            elif type(msg) is MemberDigest:
                self._on_digest(msg, link, now)
            elif type(msg) is MemberHash:
                if self._take(link, 1, now) and msg != self.membership.summary():
                    self._send(link, self.membership.digest(ask=True))
            elif type(msg) is ProbeReq:
                self._on_probe(msg, link, now)
            elif type(msg) is ProbeAck:
                self.membership.detector.on_ack(msg, peer)
        except RemoteProtocolError as exc:
            self.stats.bad += 1
            log.warning("link %s (%s) sent a bad member frame (%s: %s); closing it",
                        link.peer.name, link.peer_hex[:8], exc.code, exc.message,
                        extra=link.log_fields(reason=exc.code))
            self._bad_links.add(link)
            link.abort(exc.code)
        if self.membership.outbox:
            self.wake()
        return []

    def _take(self, link: PeerLink, count: int, now: float, *, digest: bool = False) -> bool:
        """Charge ``count`` records, claims or probes (or one digest) to the link's limits:
        ``member_rate`` (bursts of twice that), and four digests per sync interval (each
        makes this node send what the peer lacks: up to the whole list)."""
        if self._bucket(link, now, digest=digest).take(count, now):
            return True
        self.stats.rate_limited += count
        return False

    def _bucket(self, link: PeerLink, now: float, *, digest: bool = False) -> TokenBucket:
        buckets = self._buckets.get(link.peer_id)
        if buckets is None:
            rate, digests = self.config.member_rate, 4 / self.config.member_sync_interval
            buckets = self._buckets[link.peer_id] = (TokenBucket(rate, 2 * rate, now),
                                                     TokenBucket(digests, 4, now))
        return buckets[1 if digest else 0]

    def _on_members(self, msg: Members, link: PeerLink, now: float) -> None:
        """Records and claims, charged to the link's ``member_rate``: ``LOOK_COST`` each,
        and 1 more for each whose signature is checked (copies of what this node has
        already cost next to nothing: a join floods each record over every link). What
        is over the rate is dropped, and the link is asked again a little later
        (``RESYNC_AFTER``) for what is still missing here."""
        items = len(msg.records) + len(msg.claims)
        if self._bucket(link, now).take(items * LOOK_COST, now):
            dropped = self.membership.receive(msg, link.peer_id, now,
                                              allow=lambda: self._take(link, 1, now))
        else:
            self.stats.rate_limited += items
            dropped = items
        if dropped:
            self._resync.setdefault(link.peer_id, now + RESYNC_AFTER)

    def _resync_due(self, now: float) -> None:
        """Send this node's digest to each link whose records were dropped for
        ``member_rate`` ``RESYNC_AFTER`` ago (its answer brings what is still missing)."""
        assert self.links is not None
        for pid in [pid for pid, due in self._resync.items() if due <= now]:
            del self._resync[pid]
            link = self.links.links.get(pid)
            if link is not None:
                self._send(link, self.membership.digest())

    def _on_digest(self, msg: MemberDigest, link: PeerLink, now: float) -> None:
        # Its size is bounded by the wire (6,000 entries), not by this node's max_members:
        # a peer that keeps more members is no less honest.
        if not self._take(link, 1, now, digest=True):
            return
        for frame in self.membership.answer(msg):
            self._send(link, frame)
        if msg.ask:
            self._send(link, self.membership.digest())

    def _on_probe(self, req: ProbeReq, link: PeerLink, now: float) -> None:
        if not self._take(link, 1, now):
            return
        assert self.links is not None
        target = self.links.links.get(req.target)
        alive = target is not None and now - target.last_rx <= self.config.ping_interval
        self.stats.probes_answered += 1
        self._send(link, ProbeAck(req.target, req.nonce, alive))

    # -- links -------------------------------------------------------------------------

    def link_changed(self, link: PeerLink, up: bool) -> None:
        """A link opened (send our digest) or closed (probe its peer unless it said bye)."""
        pid = link.peer_id
        if up:
            self.membership.detector.clear(pid)  # it is back: a probe under way ends
            self._send(link, self.membership.digest())
            return
        self._buckets.pop(pid, None)
        self._silent.discard(pid)
        self._resync.pop(pid, None)
        reason = link.close_reason
        if reason in PROBE_CLOSES and link.heard:
            entry = self.membership.table.entries.get(pid)
            if entry is not None and entry.info.state == "alive":
                self._probe(pid, trio.current_time())

    def _probe(self, target: bytes, now: float) -> None:
        """Ask up to ``probe_k`` peers whether they hear ``target``. Only peers this node
        hears itself are asked; with none, nothing is probed: when every link is silent
        at once the trouble is most likely here (this process was stopped or starved,
        Lifeguard's "local health"), and a node cut off from all cannot tell who failed."""
        assert self.links is not None
        helpers = [pid for pid in self.links.links if pid != target and pid not in self._silent]
        if not helpers:
            self.stats.probes_skipped += 1
            return
        for helper, req in self.membership.detector.start_probe(target, helpers, now):
            link = self.links.links.get(helper)
            if link is not None:
                self._send(link, req)

    def _check_links(self, now: float) -> None:
        """Probe each peer silent for 1.5 ping intervals; end the probe of one heard
        again."""
        assert self.links is not None
        quiet = 1.5 * self.config.ping_interval
        silent = {pid for pid, link in self.links.links.items() if now - link.last_rx > quiet}
        for pid in self._silent - silent:
            self.membership.detector.clear(pid)
        fresh = silent - self._silent
        self._silent = silent
        for pid in fresh:
            self._probe(pid, now)

    def _exchange(self, kind: str, info: MemberInfo) -> None:
        """Peer exchange: live members of our version and network are dial candidates."""
        if self.links is None or info.this_node or not self.config.peer_exchange:
            return
        if kind in ("member_dead", "member_left"):
            self.links.peer_lost(info.node_id)
        elif (kind in ("member_join", "member_update") and info.state == "alive"
              and info.version == PROTOCOL_VERSION and info.network == self.network):
            self.links.peer_discovered(info.node_id, valid_hostports(info.addrs))

    # -- the tasks -------------------------------------------------------------------------

    def px(self) -> list[PxPeer]:
        """Up to 16 random live members with addresses, of this node's version and
        network (named when this node refuses a link for want of room)."""
        fit = [m for m in self.membership.members()
               if m.state == "alive" and not m.this_node and m.addrs
               and m.version == PROTOCOL_VERSION and m.network == self.network]
        return [PxPeer(m.node_id, m.addrs[:8]) for m in self._rng.sample(fit, min(16, len(fit)))]

    async def run(self, links: LinkManager, listen: str) -> None:
        """Flood, sync and watch ``links`` until cancelled; this node listens on
        ``listen`` (its record says so: ``record_addrs``)."""
        self.links = links
        if self.config.peer_exchange:
            links.px_source = self.px
        self.membership.start(record_addrs(listen), trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flood_loop)
            nursery.start_soon(self._sync_loop)
            await self._timer_loop()

    async def _flood_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()

    async def _sync_loop(self) -> None:
        interval = self.config.member_sync_interval
        while True:
            await trio.sleep(interval * (0.5 + self._rng.random()))
            assert self.links is not None
            if self.links.links:
                link = self._rng.choice(list(self.links.links.values()))
                self._send(link, self.membership.summary())

    async def _timer_loop(self) -> None:
        step = self.config.ping_interval / 4
        while True:
            now = trio.current_time()
            self._check_links(now)
            self._resync_due(now)
            self.membership.tick(now)
            if self.membership.outbox:
                self.flush()
            deadline = self.membership.next_deadline()
            wake = now + step if deadline is None else min(deadline, now + step)
            # Never a busy loop: a deadline already past waits a little.
            await trio.sleep_until(max(wake, now + step / 16))

    def leave(self) -> None:
        """Tell every link this node leaves (its ``left`` record), before the Byes."""
        if self.membership.me.state == "left":
            return
        record = self.membership.leave()
        if record is None or self.links is None:
            return
        frame = encode_message(Members([record]))
        for link in list(self.links.links.values()):
            self._send_frame(link, frame)


def record_addrs(listen: str) -> list[str]:
    """The addresses this node's record gives: ``listen`` (the ``--advertise`` host, or
    the listen address, and the real port), except that a node listening on every
    address (``0.0.0.0``, ``::``) without ``--advertise`` gives the primary IPv4
    address of each interface that is up (not loopback; at most 8), which others can
    dial."""
    try:
        host, port = parse_hostport(listen)
    except ConfigError:
        return [listen]
    if host not in ("0.0.0.0", "::"):
        return [listen]
    try:
        ips = suitable_ipv4_addresses()
    except OSError:
        ips = ()
    return [format_hostport(ip, port) for ip in ips[:8]] or [listen]


def _frames(items: list[SignedMember | SignedClaim]) -> list[bytes]:
    records = [item for item in items if type(item) is SignedMember]
    claims = [item for item in items if type(item) is SignedClaim]
    return [encode_message(frame) for frame in pack(records, claims)]
