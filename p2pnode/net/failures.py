"""Why a link could not be made, said so that an operator knows what to do, and the
record of those failures: rate-limited log lines, the last failure per address.

A ``Failure`` is one explained failure: a short ``reason`` code to filter on, a
``message`` that says what happened and what to do, and the library's own text
(``detail``: OpenSSL's, the system's) kept as a field of the log record rather than
in the message. ``FailureLog`` logs them: the first failure for an address at once,
then at most one line per ``interval`` with the count of failures in between, and
again at once when the reason changes or after a link to that address opened.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..ids import id_to_hex
from ..wire.messages import Hello

log = logging.getLogger("p2pnode.links")

#: Reasons that are a warning whichever side saw them: two nodes that cannot link
#: until an operator changes something.
MISCONFIGURED = frozenset({
    "network_mismatch", "peer_insecure", "peer_tls", "version_mismatch",
    "identity_mismatch", "identity_unproven",
})
#: Reasons that are part of normal operation: not recorded as failures at all.
ROUTINE = frozenset({"duplicate", "self", "shutdown"})


@dataclass(frozen=True)
class Failure:
    """One failure to link, explained.

    ``reason``: a short code (``connection_refused``, ``network_mismatch``...);
    ``message``: what happened and what to do; ``detail``: the library's own text;
    ``network``: the peer's network tag, when known.
    """

    reason: str
    message: str
    detail: str = ""
    network: str | None = None

    def with_detail(self, detail: str) -> Failure:
        """This failure with ``detail`` as its library text (or a peer's words)."""
        return dataclasses.replace(self, detail=detail)


class LinkFailureError(OSError):
    """A transport could not connect, for a reason it explained (``failure``)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _leaf_oserror(exc: BaseException) -> BaseException:
    """The first ``OSError`` inside trio's "all attempts to connect failed" error."""
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup):
        for inner in group.exceptions:
            if isinstance(inner, OSError):
                return inner
    return exc


def explain_connect_error(exc: BaseException, host: str, addr: str,
                          timeout: float) -> Failure:
    """A ``Failure`` for an exception raised while connecting to ``addr``."""
    if isinstance(exc, LinkFailureError):
        return exc.failure
    if isinstance(exc, socket.gaierror):
        return Failure("unresolvable", f"cannot link to {addr}: the name {host!r} does not "
                       f"resolve ({exc.strerror})", str(exc))
    if not isinstance(exc, OSError):  # trio.TooSlowError
        return Failure("dial_timeout", f"cannot link to {addr}: no answer within {timeout:g} s "
                       "(the host is down, or a firewall drops the connection)",
                       type(exc).__name__)
    leaf = _leaf_oserror(exc)
    detail = str(leaf) or type(leaf).__name__
    if isinstance(leaf, ConnectionRefusedError):
        return Failure("connection_refused", f"cannot link to {addr}: connection refused "
                       "(no node listens there: is it running, and is the port right?)",
                       detail)
    code = getattr(leaf, "errno", None)
    strerror = getattr(leaf, "strerror", None) or detail
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return Failure("unreachable", f"cannot link to {addr}: {strerror}", detail)
    if code == errno.ETIMEDOUT:
        return Failure("dial_timeout", f"cannot link to {addr}: {strerror}", detail)
    return Failure("connect_failed", f"cannot link to {addr}: {strerror}", detail)


def network_mismatch(addr: str, theirs: str | None, ours: str) -> Failure:
    """Peer ``addr`` is on network ``theirs`` (None: unknown), this node on ``ours``."""
    tag = f"network tag {theirs}" if theirs else "its network tag unknown"
    return Failure("network_mismatch", f"peer {addr} is on another network ({tag}, ours "
                   f"{ours}): give both the same --network-key", network=theirs)


def tls_mismatch(addr: str, *, peer_speaks_tls: bool) -> Failure:
    """One side runs ``--insecure`` and the other TLS."""
    if peer_speaks_tls:
        return Failure("peer_tls", f"peer {addr} speaks TLS, this node runs --insecure; "
                       "run both with or both without --insecure")
    return Failure("peer_insecure", f"peer {addr} runs --insecure (plaintext), this node "
                   "runs TLS; run both with or both without --insecure")


@dataclass
class FailureRecord:
    """The failures of one address since its last link (a streak)."""

    addr: str
    failure: Failure
    direction: str
    at: float  # wall-clock time of the last failure (Unix seconds)
    count: int = 1  # failures in this streak
    peer_id: bytes | None = None
    peer_name: str | None = None
    logged_at: float = 0.0  # monotonic time of the last log line for this address
    unlogged: int = 0  # failures since that line


class FailureLog:
    """Logs link failures, rate-limited per address, and keeps the last one of each.

    Args:
        interval: seconds between two log lines for one address (the failures in
            between are counted in the next line).
        max_addresses: addresses remembered at most (the oldest is forgotten).
        clock: monotonic seconds (trio's clock in a node).
    """

    def __init__(self, interval: float = 60.0, max_addresses: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_addresses = max_addresses
        self.clock = clock
        self.records: OrderedDict[str, FailureRecord] = OrderedDict()
        self._linked: set[str] = set()  # addresses whose streak ended with a link
        self.suppressed = 0  # log lines left out by the rate limit

    def report(self, addr: str, failure: Failure, *, direction: str,
               peer_id: bytes | None = None, peer_name: str | None = None,
               retry_in: float | None = None) -> None:
        """Record a failure to link with ``addr`` and log it unless one was logged
        for that address within ``interval`` (with the same reason)."""
        if failure.reason in ROUTINE:
            return
        now = self.clock()
        old = self.records.pop(addr, None)
        fresh = old is None or addr in self._linked or old.failure.reason != failure.reason
        self._linked.discard(addr)
        rec = FailureRecord(addr, failure, direction, time.time(), peer_id=peer_id,
                            peer_name=peer_name)
        if old is not None and not fresh:
            rec.count = old.count + 1
            rec.logged_at, rec.unlogged = old.logged_at, old.unlogged
            rec.peer_id = peer_id or old.peer_id
            rec.peer_name = peer_name or old.peer_name
        self.records[addr] = rec
        while len(self.records) > self.max_addresses:
            self.records.popitem(last=False)
        if not fresh and now - rec.logged_at < self.interval:
            rec.unlogged += 1
            self.suppressed += 1
            return
        self._log(rec, retry_in, since=None if fresh else now - rec.logged_at)
        rec.logged_at, rec.unlogged = now, 0

    def _log(self, rec: FailureRecord, retry_in: float | None, since: float | None) -> None:
        f = rec.failure
        text = f.message
        if retry_in is not None:
            text += f"; retrying in {retry_in:.1f} s"
        if since is not None and rec.unlogged:
            text += f" ({rec.unlogged + 1} failures in the last {since:.0f} s)"
        warn = f.reason in MISCONFIGURED or rec.direction == "out"
        fields: dict[str, Any] = {
            "addr": rec.addr, "direction": rec.direction, "reason": f.reason,
            "failures": rec.count,
        }
        if rec.peer_id is not None:
            fields["peer_id"] = id_to_hex(rec.peer_id)
        if rec.peer_name is not None:
            fields["peer_name"] = rec.peer_name
        if f.network is not None:
            fields["peer_network"] = f.network
        if f.detail:
            fields["detail"] = f.detail
        if retry_in is not None:
            fields["retry_s"] = round(retry_in, 3)
        log.log(logging.WARNING if warn else logging.INFO, "%s", text, extra=fields)

    def linked(self, addr: str) -> None:
        """A link to ``addr`` opened: its next failure is logged at once."""
        if addr in self.records:
            self._linked.add(addr)

    def last(self, *, addrs: tuple[str, ...] = (),
             peer_id: bytes | None = None) -> FailureRecord | None:
        """The newest failure recorded for one of ``addrs`` or for ``peer_id``."""
        found = [r for r in self.records.values()
                 if r.addr in addrs or (peer_id is not None and r.peer_id == peer_id)]
        return max(found, key=lambda r: r.at, default=None)

    def recent(self, limit: int = 16) -> list[FailureRecord]:
        """The newest ``limit`` records, newest first."""
        return sorted(self.records.values(), key=lambda r: r.at, reverse=True)[:limit]


_CODE = re.compile(r"[a-z_:]{1,40}")
_REFUSALS = {
    "too_many_links": "has its maximum of links (max_links)",
    "identity_mismatch": "claims a node id that is not its certificate's",
    "identity_unproven": "has a certificate that proves no node id",
    "handshake_timeout": "did not finish the link handshake in time",
}


def explain_refusal(addr: str, code: str, *, by_peer: bool, local: Hello,
                    peer: Hello | None) -> Failure:
    """A ``Failure`` for a link refused in its handshake with ``code`` (by the peer at
    ``addr``, or by this node). The peer's own words are never put in the message."""
    code = code if _CODE.fullmatch(code) else "unknown"
    if code == "tls_required":
        return tls_mismatch(addr, peer_speaks_tls=True)
    if code == "network_mismatch":
        return network_mismatch(addr, peer.network if peer else None, local.network)
    if code == "version_mismatch" and peer is not None:
        return Failure(code, f"peer {addr} speaks protocol version {peer.version}, this "
                       f"node {local.version}: run compatible p2pnode versions")
    if by_peer:
        return Failure(code, f"peer {addr} refused the link ({code})")
    why = _REFUSALS.get(code, f"broke the link handshake ({code})")
    if code == "too_many_links":
        return Failure(code, f"refused a link from {addr}: this node {why}")
    return Failure(code, f"refused the link with {addr}: the peer {why}")
