"""The connection manager: who we are linked to, inbound admission, dialling with backoff.

It keeps exactly one link per peer (the handshake's tie-break makes both sides
agree which connection survives) and never links a node to itself.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..config.settings import NodeConfig, format_hostport, parse_hostport, valid_hostports
from ..errors import ConfigError
from ..wire.link import check_hello
from ..wire.messages import Bye, GossipMessage, Hello, PxPeer, encode_message
from .failures import Failure, FailureLog, explain_connect_error
from .link import Direction, LinkResult, PeerLink, run_connection
from .transport import Transport

log = logging.getLogger("p2pnode.links")


@dataclass
class LinkStats:
    """Counters of the connection manager."""

    opened: int = 0
    closed: Counter[str] = field(default_factory=Counter)  # by reason
    dials: int = 0
    dials_failed: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # links we refused, by code
    refused_by_peer: Counter[str] = field(default_factory=Counter)  # links peers refused
    handshake_failed: Counter[str] = field(default_factory=Counter)  # timeouts, bad input
    queue_drops: int = 0  # frames dropped because a peer's queue was full
    discovered_ignored: int = 0  # discovered nodes over max_discovered
    px_received: int = 0  # members named by nodes that refused us for want of room
    pruned: int = 0  # links we closed because we had more than degree_high
    pings_lost: int = 0  # pings not answered before the next one (closed links)
    bytes_sent: int = 0  # bytes written to links that have closed (open ones: on the link)
    bytes_received: int = 0  # bytes read from links that have closed


@dataclass
class _Discovered:
    """A node discovery reported, as a dial candidate."""

    addrs: tuple[tuple[str, int], ...]
    found_at: float
    next_try: float = 0.0  # not dialled before this trio time (backoff, prune cooldown)
    delay: float = 0.0  # current backoff
    dialling: bool = False  # a dial (or the link it made) is running


@dataclass
class _Static:
    """A static peer (``--peer``): whether it is still wanted, and the scope of its
    backoff sleep (cancelled when it is removed)."""

    removed: bool = False
    sleeping: trio.CancelScope = field(default_factory=trio.CancelScope)


@functools.lru_cache(maxsize=4096)
def subnet(addr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The /24 (IPv4) or /64 (IPv6) of ``HOST:PORT``'s host; None if it is no IP address."""
    try:
        host = parse_hostport(addr, default_port=0)[0]
        ip = ipaddress.ip_address(host)
    except (ConfigError, ValueError):
        return None
    return ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)


def _failure_key(addr: str, direction: Direction) -> str:
    """Failures are kept per dialled address, and per host for inbound connections
    (whose port changes with every connection)."""
    return addr.rsplit(":", 1)[0] if direction == "in" and ":" in addr else addr


class LinkManager:
    """Owns every link of a node.

    Args:
        config: the node's configuration.
        local_hello: the Hello this node sends.
        transport: how to listen and connect.
        on_gossip: called synchronously with each batch of gossip from a link.
        on_link_change: called with (link, up) when a link opens or closes.
        failures: where failures to link are logged and kept (a new one if not given).
    """

    def __init__(
        self,
        config: NodeConfig,
        local_hello: Hello,
        transport: Transport,
        on_gossip: Callable[[PeerLink, list[GossipMessage]], None],
        on_link_change: Callable[[PeerLink, bool], None],
        failures: FailureLog | None = None,
    ) -> None:
        self.config = config
        self.local_hello = local_hello
        self.transport = transport
        self._on_gossip = on_gossip
        self._on_link_change = on_link_change
        self.links: dict[bytes, PeerLink] = {}
        self.stats = LinkStats()
        self._rng = random.Random(config.seed)
        self._changed = trio.Event()
        self._discovered: dict[bytes, _Discovered] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._last_prune = -1e9
        self._pending_in = 0  # inbound connections still handshaking
        self.failures = failures or FailureLog(clock=trio.current_time)
        #: The static peers (``--peer``) and whether each is still wanted.
        self.statics: dict[tuple[str, int], _Static] = {}
        #: Members to name when refusing a link for want of room (the member list's).
        self.px_source: Callable[[], list[PxPeer]] | None = None

    @property
    def changed(self) -> trio.Event:
        """An event set the next time a link opens or closes (take it before checking)."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- LinkHost interface (called by connections) --------------------------

    def admit(self, hello: Hello, *, decides: bool,
              verified: bytes | None = None) -> tuple[str, str] | None:
        """Decide whether a handshaking peer may link. Returns (code, message) to refuse.
        ``verified`` is the node id the peer proved with its TLS certificate (if any)."""
        problem = check_hello(self.local_hello, hello)
        if problem is None and verified is not None and verified != hello.node_id:
            problem = ("identity_mismatch", "the node id does not match the certificate's key")
        if problem is None and decides and hello.node_id in self.links:
            problem = ("duplicate", "already linked to this node")
        if (problem is None and hello.node_id not in self.links
                and len(self.links) >= self.config.max_links):
            problem = ("too_many_links", f"this node has its maximum of {self.config.max_links}")
        if problem is not None:
            self.refused(problem[0])
        return problem

    def refused(self, code: str) -> None:
        """Count a link this node refused (``code`` is the refusal's code)."""
        self.stats.refused[code] += 1

    def px_for(self, code: str) -> list[PxPeer]:
        """Members to name in a refusal for want of room (peer exchange), if any."""
        if code != "too_many_links" or self.px_source is None:
            return []
        return self.px_source()

    def px_received(self, px: tuple[PxPeer, ...]) -> None:
        """A node that refused us named members to try instead: dial candidates."""
        if not self.config.peer_exchange:
            return
        for peer in px:
            self.stats.px_received += 1
            self.peer_discovered(peer.node_id, valid_hostports(peer.addrs))

    def link_open(self, link: PeerLink) -> None:
        """A connection finished its handshake: it is now the link to its peer."""
        old = self.links.get(link.peer_id)
        if old is not None:
            # The deciding side chose this connection: the old one is stale.
            old.close("replaced")
            self._forget(old)
        self.links[link.peer_id] = link
        self.stats.opened += 1
        self.failures.linked(_failure_key(link.addr, link.direction))
        log.info("link up: %s (%s) %s %s", link.peer.name, link.peer_hex[:8],
                 link.direction, link.addr,
                 extra=link.log_fields(link="up", listen=link.listen, static=link.static))
        self._on_link_change(link, True)
        self._notify()
        self.poke()

    def link_closed(self, link: PeerLink) -> None:
        """A link's connection ended."""
        if self.links.get(link.peer_id) is link:
            self._forget(link)

    def _forget(self, link: PeerLink) -> None:
        del self.links[link.peer_id]
        self.stats.closed[link.close_reason or "closed"] += 1
        self.stats.pings_lost += link.pings_lost
        self.stats.bytes_sent += link.out.sent_bytes
        self.stats.bytes_received += link.bytes_received
        reason = link.close_reason or "closed"
        log.info("link down: %s (%s): %s", link.peer.name, link.peer_hex[:8], reason,
                 extra=link.log_fields(link="down", reason=reason))
        if link.close_reason == "pruned_by_peer":
            entry = self._discovered.get(link.peer_id)
            if entry is not None:
                entry.next_try = trio.current_time() + self.config.prune_cooldown
        self._on_link_change(link, False)
        self._notify()
        self.poke()

    def on_gossip(self, link: PeerLink, msgs: list[GossipMessage]) -> None:
        self._on_gossip(link, msgs)

    # -- connections ------------------------------------------------------------

    async def handle_inbound(self, stream: trio.abc.Stream, addr: str) -> None:
        """Run an inbound connection (a transport's handler). At most
        ``max_pending_handshakes`` may be handshaking at once; more are closed at once."""
        if self._pending_in >= self.config.max_pending_handshakes:
            self.stats.refused["busy"] += 1
            await trio.aclose_forcefully(stream)
            return
        self._pending_in += 1
        counted = True

        def opened() -> None:
            nonlocal counted
            if counted:
                counted = False
                self._pending_in -= 1

        try:
            result = self._count(await run_connection(self, stream, addr, "in", on_open=opened))
        finally:
            opened()
        self.report(addr, result, "in")

    def report(self, addr: str, result: LinkResult, direction: Direction,
               retry_in: float | None = None) -> None:
        """Log and keep the failure of a connection with ``addr``, if it failed."""
        if result.failure is not None:
            self.failures.report(_failure_key(addr, direction), result.failure,
                                 direction=direction, peer_id=result.peer_id,
                                 retry_in=retry_in)

    def report_inbound(self, addr: str, failure: Failure) -> None:
        """An inbound connection from ``addr`` failed before its link handshake (TLS)."""
        self.failures.report(_failure_key(addr, "in"), failure, direction="in")

    def _count(self, result: LinkResult) -> LinkResult:
        if result.code == "refused":
            self.stats.refused_by_peer[result.detail] += 1
        elif result.code in ("timeout", "protocol_error"):
            self.stats.handshake_failed[result.detail] += 1
        return result

    async def dial(self, host: str, port: int, *, static: bool = False) -> LinkResult:
        """Connect to ``host:port`` and run the link until it closes. A ``static`` link
        (a ``--peer``) is never pruned."""
        self.stats.dials += 1
        addr = format_hostport(host, port)
        try:
            with trio.fail_after(self.config.dial_timeout):
                stream = await self.transport.connect(host, port)
        except (OSError, trio.TooSlowError) as exc:
            self.stats.dials_failed += 1
            failure = explain_connect_error(exc, host, addr, self.config.dial_timeout)
            log.debug("dial %s failed: %s", addr, failure.detail)
            return LinkResult("unreachable", detail=failure.detail or failure.reason,
                              failure=failure)
        direction: Direction = "out"
        return self._count(await run_connection(self, stream, addr, direction, static=static))

    async def wait_unlinked(self, peer_id: bytes) -> None:
        """Return once there is no link to ``peer_id``."""
        while (link := self.links.get(peer_id)) is not None:
            await link.closed.wait()

    async def keep_dialling(self, host: str, port: int) -> None:
        """Keep a link to the node at ``host:port``: dial, redial with backoff. Runs until
        cancelled, until ``set_static_peers`` removes the address, or until that address
        turns out to be this node itself."""
        addr = format_hostport(host, port)
        static = self.statics.setdefault((host, port), _Static())
        delay = self.config.redial_initial
        while not static.removed:
            result = await self.dial(host, port, static=True)
            if result.detail == "self":
                log.warning("%s is this node itself; not dialling it", addr,
                            extra={"addr": addr, "reason": "self"})
                return
            if result.code == "closed":
                delay = self.config.redial_initial
            elif result.detail == "duplicate" and result.peer_id is not None:
                # Linked already (the other way round), or the peer still holds a stale
                # link to us that it will drop by keepalive: wait, then try again.
                await self.wait_unlinked(result.peer_id)
                delay = self.config.redial_initial
            elif result.detail == "too_many_links" and self.config.peer_exchange:
                # A full seed: it named others to link to (peer exchange). It is needed
                # again only while this node has no link at all.
                await self._wait_alone()
                delay = min(delay * 2, self.config.redial_max)
            else:
                delay = min(delay * 2, self.config.redial_max)
            wait = delay * (0.5 + self._rng.random())
            if not static.removed:
                self.report(addr, result, "out", retry_in=wait)
            with static.sleeping:
                await trio.sleep(wait)
            static.sleeping = trio.CancelScope()

    async def _wait_alone(self) -> None:
        """Return once this node has no link."""
        while self.links:
            await self.changed.wait()

    def set_static_peers(self, peers: tuple[tuple[str, int], ...]) -> tuple[list[str], list[str]]:
        """Keep links to ``peers`` from now on: dial the new ones (in the manager's
        nursery, so after ``run`` has started), and stop redialling the ones no longer
        listed (their open links stay, and may be pruned). Returns (added, removed)."""
        assert self._nursery is not None
        added = [p for p in peers if p not in self.statics or self.statics[p].removed]
        removed = [p for p, s in self.statics.items() if p not in peers and not s.removed]
        for key in removed:
            self.statics[key].removed = True
            self.statics[key].sleeping.cancel()
            for link in self.links.values():
                if link.static and link.addr == format_hostport(*key):
                    link.static = False
        for key in added:
            self.statics.pop(key, None)
            self._nursery.start_soon(self.keep_dialling, *key)
        return ([format_hostport(*p) for p in added], [format_hostport(*p) for p in removed])

    # -- degree management and discovered peers ----------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link count in range until cancelled: dial discovered peers while under
        ``degree_low``, prune while over ``degree_high``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                now = trio.current_time()
                wake_at = self._maintain(now)
                with trio.move_on_at(min(wake_at, now + self.config.ping_interval)):
                    await self._wake.wait()
                self._wake = trio.Event()

    def poke(self) -> None:
        """Look at the link count again now (after a change of the limits)."""
        self._wake.set()

    def peer_discovered(self, node_id: bytes, addrs: tuple[tuple[str, int], ...]) -> None:
        """A discovery service found (or updated) a node: a candidate to dial."""
        if node_id == self.local_hello.node_id or not addrs:
            return
        entry = self._discovered.get(node_id)
        if entry is not None:
            entry.addrs = addrs
            return
        if len(self._discovered) >= self.config.max_discovered:
            self.stats.discovered_ignored += 1
            return
        self._discovered[node_id] = _Discovered(addrs, found_at=trio.current_time())
        self.poke()

    def peer_lost(self, node_id: bytes) -> None:
        """A discovered node said goodbye (or expired): no longer a candidate."""
        self._discovered.pop(node_id, None)

    def _maintain(self, now: float) -> float:
        """Start dials while under ``degree_low``; prune one link while over ``degree_high``.
        Returns when a candidate that is backing off may be dialled next."""
        cfg = self.config
        dialling = sum(1 for pid, e in self._discovered.items()
                       if e.dialling and pid not in self.links)
        want = cfg.degree_low - len(self.links) - dialling
        if want > 0 and self._nursery is not None:
            own = self.local_hello.node_id
            candidates = [
                pid for pid, e in self._discovered.items()
                if pid not in self.links and not e.dialling and e.next_try <= now
                and (pid > own or now - e.found_at >= cfg.discovery_grace)
            ]
            for pid in self._pick(candidates, want):
                self._discovered[pid].dialling = True
                self._nursery.start_soon(self._dial_discovered, pid, self._discovered[pid])
        if len(self.links) > cfg.degree_high and now - self._last_prune >= 2 * cfg.ping_interval:
            self._prune_one(now)
        waiting = [e.next_try for pid, e in self._discovered.items()
                   if not e.dialling and e.next_try > now and pid not in self.links]
        return min(waiting, default=now + cfg.ping_interval)

    def _pick(self, candidates: list[bytes], want: int) -> list[bytes]:
        """Up to ``want`` random candidates; when every link is to one subnet (/24 of
        IPv4, /64 of IPv6), candidates in another come first (a mesh of several
        subnets keeps links across them, not only to the nearest)."""
        chosen = self._rng.sample(candidates, min(want, len(candidates)))
        ours = {subnet(link.addr) for link in self.links.values()}
        if len(ours) != 1 or None in ours:
            return chosen
        away = [pid for pid in candidates
                if subnet(format_hostport(*self._discovered[pid].addrs[0])) not in ours]
        if not away:
            return chosen
        first = self._rng.sample(away, min(want, len(away)))
        return first + [pid for pid in chosen if pid not in first][:want - len(first)]

    async def _dial_discovered(self, node_id: bytes, entry: _Discovered) -> None:
        """Dial a discovered node (each address in turn) and run the link until it closes;
        then set when it may be dialled again (exponential backoff with jitter)."""
        cfg = self.config
        linked = False
        failed: list[tuple[str, LinkResult]] = []
        try:
            for host, port in entry.addrs:
                result = await self.dial(host, port)
                linked = result.code == "closed" or result.detail == "duplicate"
                failed.append((format_hostport(host, port), result))
                if linked or result.code in ("refused", "refusing"):
                    break
        finally:
            entry.dialling = False
            entry.delay = 0.0 if linked else min(max(entry.delay * 2, cfg.redial_initial),
                                                  cfg.redial_max)
            wait = (entry.delay or cfg.redial_initial) * (0.5 + self._rng.random())
            entry.next_try = max(trio.current_time() + wait, entry.next_try)
            self.poke()
        for addr, result in failed:
            self.report(addr, result, "out", retry_in=entry.next_try - trio.current_time())

    def _prune_one(self, now: float) -> None:
        """Close one link to a peer that has links to spare, so our degree falls back
        toward ``degree_high``. Static links, and links the peer asked to keep, stay."""
        low = self.config.degree_low
        spare = [
            link for link in self.links.values()
            if not link.static and not link.peer_keeps
            and link.peer_links is not None and link.peer_links > low
        ]
        if not spare:
            return
        most = max(link.peer_links or 0 for link in spare)
        victim = self._rng.choice([link for link in spare if link.peer_links == most])
        self._last_prune = now
        self.stats.pruned += 1
        log.info("pruning link to %s (%s): %d links here, %d there", victim.peer.name,
                 victim.peer_hex[:8], len(self.links), most,
                 extra=victim.log_fields(reason="pruned"))
        victim.close("pruned", encode_message(Bye("pruned")))

    def link_count(self) -> int:
        """How many links are open."""
        return len(self.links)

    def close_all(self, bye: Callable[[PeerLink], bytes]) -> None:
        """Say goodbye on every link and close it."""
        for link in list(self.links.values()):
            link.close("shutdown", bye(link))
