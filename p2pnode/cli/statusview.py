"""``p2pnode status``: a readable summary of a node's ``status`` reply.

Rates come from two replies taken ``interval`` seconds apart (their difference
over the difference of ``uptime_s``), or from one reply averaged over the
node's uptime. Every field is optional: a field the node does not report is
left out, and counters this module does not know are listed under ``other``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MAX_PEER_ROWS = 8

#: Counters of messages and batches shown as rates: (section, key, label).
RATES = (
    ("messages", "published", "published"), ("messages", "delivered", "delivered"),
)
BATCH_RATES = (
    ("messages", "received", "received"), ("messages", "forwarded", "forwarded"),
    ("messages", "duplicates", "duplicates"),
)
#: Counters of things lost or refused: (section, key, what and why).
DROPS = (
    ("links", "queue_drops", "batch copies dropped: a peer's send queue was full"),
    ("api", "events_dropped", "events dropped: local subscribers read too slowly"),
    ("messages", "rate_limited", "batches dropped: a peer sent over its rate limit"),
    ("messages", "rejected", "batches rejected: bad signature, key or contents"),
    ("messages", "hop_limited", "batches stopped by the hop limit"),
    ("security", "new_origin_limited",
     "batches dropped: a peer brought new origins over its rate"),
    ("security", "origins_forgotten", "origin runs forgotten to make room (replay state)"),
    ("messages", "order_gaps", "messages never came: order gaps skipped after --order-hold"),
    ("gossip", "missing_given_up", "announced batches never obtained from any announcer"),
    ("history", "evicted", "batches left history early (its size limits)"),
    ("api", "rate_limited", "publishes or replays refused: a local app went over its rate"),
    ("api", "clients_refused", "API connections refused: too many clients"),
    ("api", "clients_forbidden", "API connections refused: another user"),
    ("api", "errors", "API error replies"),
    ("links", "dials_failed", "dials failed (peer down or unreachable)"),
    ("links", "pings_lost", "keepalive pings lost"),
    ("links", "pruned", "links pruned (more links than wanted)"),
    ("links", "discovered_ignored", "discovered nodes ignored (other version or network)"),
    ("security", "tls_failed", "TLS handshakes failed (another network, a scanner?)"),
    ("security", "busy_refused", "connections refused: too many handshakes at once"),
    ("security", "refused_per_ip", "connections refused: too many from one address"),
)
#: Counters by reason: (section, key, what).
BY_REASON = (
    ("links", "closed", "links closed"), ("links", "refused", "links refused here"),
    ("links", "refused_by_peer", "links refused by peers"),
    ("links", "handshake_failed", "link handshakes failed"),
)
#: Fields shown elsewhere or not counters at all.
SHOWN = {(s, k) for s, k, _ in (*RATES, *BATCH_RATES, *DROPS, *BY_REASON)} | {
    ("messages", "seen_cache"), ("links", "opened"), ("links", "dials"),
    ("security", "rate_limited"),
    ("security", "rejected_batches"), ("security", "links"), ("security", "network"),
    ("security", "members_only"), ("security", "signed_batches"),
    ("security", "tls_handshakes"), ("security", "origins_tracked"), ("api", "requests"),
    ("api", "replays"),
}
TOP_LEVEL = {"ok", "id", "node_id", "name", "listen", "version", "protocol", "uptime_s",
             "peers", "socket", "clients", "messages", "links", "security", "api", "mdns"}


def section_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    """``status[name]`` if it is a dict, else an empty one."""
    value = status.get(name)
    return value if isinstance(value, dict) else {}


def counter(status: dict[str, Any], section: str, key: str) -> float | None:
    """A numeric counter ``status[section][key]``, or None if absent or not a number."""
    value = section_of(status, section).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def rate(before: dict[str, Any] | None, after: dict[str, Any], section: str,
         key: str) -> float | None:
    """Per second, between two replies (or since start when ``before`` is None)."""
    now = counter(after, section, key)
    if now is None:
        return None
    t_after = after.get("uptime_s") or 0.0
    if before is None:
        return now / t_after if t_after > 0 else None
    then = counter(before, section, key)
    elapsed = t_after - (before.get("uptime_s") or 0.0)
    if then is None or elapsed <= 0:
        return None
    return (now - then) / elapsed


def format_duration(seconds: float) -> str:
    """``3725`` as ``1h 2m 5s``."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = " ".join(f"{n}{unit}" for n, unit in parts if n)
    return f"{text} {secs}s".strip()


def format_rate(value: float | None, unit: str = "/s") -> str:
    if value is None:
        return "?"
    return f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"


def summary(after: dict[str, Any], before: dict[str, Any] | None = None,
            peers: list[dict[str, Any]] | None = None) -> str:
    """The readable summary of ``after`` (with rates since ``before``, or averaged
    over the uptime) and of the peer list, when given."""
    return "\n".join(_rows(after, before, peers))


def _rows(st: dict[str, Any], before: dict[str, Any] | None,
          peers: list[dict[str, Any]] | None) -> Iterator[str]:
    g = st.get
    yield _row("node", f"{g('name', '?')} ({g('node_id', '?')}), p2pnode {g('version', '?')}, "
               f"protocol {g('protocol', '?')}")
    yield _row("listen", f"{g('listen', '?')}, socket {g('socket', '?')}, "
               f"{g('clients', '?')} API client(s)")
    uptime = g("uptime_s")
    if isinstance(uptime, int | float):
        yield _row("uptime", format_duration(uptime))
    sec = section_of(st, "security")
    if sec:
        who = "members only" if sec.get("members_only") else "any node may join"
        yield _row("security", f"{sec.get('links', '?')}, network {sec.get('network', '?')} "
                   f"({who})")
    yield from _link_rows(st, peers)
    window = "averaged over the uptime"
    if before is not None:
        window = f"over the last {g('uptime_s', 0) - before.get('uptime_s', 0):.1f}s"
    for label, counters, suffix in (("messages", RATES, f"  ({window})"),
                                    ("batches", BATCH_RATES, "")):
        parts = [f"{name} {format_rate(rate(before, st, s, k))}" for s, k, name in counters
                 if counter(st, s, k) is not None]
        if parts:
            yield _row(label, "  ".join(parts) + suffix)
    yield _row("bytes", _bytes_text(st, before))
    view, hist, gossip = (section_of(st, k) for k in ("mesh_view", "history", "gossip"))
    if view:
        yield _row("mesh view", f"{view.get('nodes', '?')} nodes, {view.get('links', '?')} "
                   "links (p2pnode mesh)")
    if hist and gossip:
        yield _row("gossip", f"{gossip.get('mode', '?')}; history {hist.get('batches', '?')} "
                   f"batches, {hist.get('bytes', 0) // 1024} KiB; grafts "
                   f"{gossip.get('grafts_sent', 0)}, repaired {gossip.get('repaired', 0)}")
    drops = list(_drop_lines(st, before))
    yield _row("drops", drops[0] if drops else "none")
    yield from (_row("", line) for line in drops[1:])
    other = list(_other(st))
    if other:
        yield _row("other", " ".join(other))


def _row(label: str, text: str) -> str:
    return f"{label:<9} {text}".rstrip()


def _link_rows(st: dict[str, Any], peers: list[dict[str, Any]] | None) -> Iterator[str]:
    links = section_of(st, "links")
    closed = links.get("closed")
    n_closed = sum(closed.values()) if isinstance(closed, dict) else "?"
    yield _row("links", f"{st.get('peers', '?')} up ({links.get('opened', '?')} opened, "
               f"{n_closed} closed, {links.get('dials', '?')} dials since start)")
    if peers is None or len(peers) > MAX_PEER_ROWS:
        return
    for p in peers:
        rtt = p.get("rtt_ms")
        yield _row("", f"{p.get('name', '?')}  {str(p.get('node_id', '?'))[:8]}  "
                   f"{p.get('direction', '?')}  {p.get('addr', '?')}  "
                   f"up {format_duration(p.get('since_s') or 0)}"
                   + (f"  rtt {rtt:.1f} ms" if isinstance(rtt, int | float) else ""))


def _bytes_text(st: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Rates of every byte counter (a key with ``bytes`` in its name, not a queue size)."""
    parts = []
    for section in ("links", "messages", "api"):
        values = st.get(section)
        if isinstance(values, dict):
            parts += [f"{key} {format_rate(rate(before, st, section, key), ' B/s')}"
                      for key in values if _is_byte_counter(key)
                      and counter(st, section, key) is not None]
    return "  ".join(parts) or "not reported by this node"


def _is_byte_counter(key: str) -> bool:
    return "bytes" in key and "queue" not in key


def _drop_lines(st: dict[str, Any], before: dict[str, Any] | None) -> Iterator[str]:
    for section, key, why in DROPS:
        total = counter(st, section, key)
        if total:
            recent = ""
            if before is not None and (prev := counter(before, section, key)) is not None:
                recent = f" (+{total - prev:g} just now)" if total != prev else ""
            yield f"{total:g} {why}{recent}"
    for section, key, what in BY_REASON:
        values = section_of(st, section).get(key)
        if isinstance(values, dict) and values:
            yield f"{what}: " + ", ".join(f"{reason} {n}" for reason, n in values.items())


def _other(st: dict[str, Any]) -> Iterator[str]:
    """Fields this view does not know (newer nodes report more), as ``key=value``."""
    for key, value in st.items():
        if key not in TOP_LEVEL:
            yield f"{key}={value}"
        elif isinstance(value, dict) and key not in ("mdns",):
            for sub, v in value.items():
                if (key, sub) not in SHOWN and not _is_byte_counter(sub):
                    yield f"{key}.{sub}={v}"
    mdns = st.get("mdns")
    if isinstance(mdns, dict):
        yield from (f"mdns.{k}={v}" for k, v in mdns.items())
