"""``p2pnode status``: a readable summary of a node's ``status`` reply.

Rates come from two replies taken ``interval`` seconds apart (their difference
over the difference of ``uptime_s``), or from one reply averaged over the
node's uptime. The fields come from the schema (``p2pnode.api.status``), but the
reply is read as plain JSON: the node may be of another version. A field the node
does not report is left out (or shown as ``?``), and fields the schema does not know
are listed under ``other``. Every field of the schema is shown, or listed in
``NOT_SHOWN``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..api.status_fields import BY_PATH, FIELDS, SECTION_NAMES
from .text import plural, table

MAX_PEER_ROWS = 8

#: Counters of messages and batches shown as rates: (section, key, label).
RATES = (
    ("messages", "published", "published"), ("messages", "delivered", "delivered"),
)
BATCH_RATES = (
    ("messages", "received", "received"), ("messages", "forwarded", "forwarded"),
    ("messages", "duplicates", "duplicates"),
)
#: Counters of things lost or refused, in schema order: (section, key, what and why).
DROPS = tuple((f.section, f.name, f.drop) for f in FIELDS
              if f.kind == "counter" and f.section and f.drop)
#: Counters by reason: (section, key, what).
BY_REASON = tuple((f.section, f.name, f.drop) for f in FIELDS
                  if f.kind == "by_reason" and f.section and f.drop)
#: Byte counters, shown as rates: (section, key).
BYTE_COUNTERS = tuple((f.section, f.name) for f in FIELDS
                      if f.kind == "counter" and f.section and f.unit == "bytes")
#: Fields of the schema the summary leaves out (``--json`` and /metrics show them).
NOT_SHOWN = frozenset({
    "messages.seen_cache", "messages.order_held", "messages.order_late",
    "messages.order_stale", "messages.recent_gaps",
    "gossip.ihave_sent", "gossip.ihave_received", "gossip.grafts_received",
    "gossip.graft_misses", "gossip.prunes_sent", "gossip.prunes_received", "gossip.swaps",
    "history.max_bytes", "history.max_age_s",
    "mdns.events", "mdns.dropped_closed", "mdns.dropped_finished", "mdns.resolved",
    "mdns.self", "mdns.found", "mdns.lost",
    "security.signed_batches", "security.tls_handshakes", "security.rate_limited",
    "security.rejected_batches", "security.origins_tracked",
    "api.requests", "api.replays",
    "retained.max_bytes", "retained.accepted", "retained.synced", "retained.sync_wanted",
    "store.path", "store.max_age_s", "store.queued", "store.committed", "store.writes",
    "store.removed", "store.failing",
    "handlers.configured", "handlers.queued", "handlers.ran",
    "interest.unwanted", "interest.caught_up", "interest.early", "interest.tails",
    "interest.streams",
    "interest.stream_held", "interest.stream_late",
    "interest.fetch_retried", "interest.fetch_asked_on", "interest.fetch_answered",
    "interest.astray",
})
#: Keys of a reply that are not status fields.
ENVELOPE = frozenset({"ok", "id"})


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
    clients = g("clients")
    yield _row("listen", f"{g('listen', '?')}, socket {g('socket', '?')}, "
               + (plural(clients, "API client") if isinstance(clients, int)
                  else "? API clients"))
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
        yield _row("mesh view", f"{_count(view.get('nodes'), 'node')}, "
                   f"{_count(view.get('links'), 'link')} (p2pnode mesh)")
    if hist and gossip:
        yield _row("gossip", f"{gossip.get('mode', '?')}; history {hist.get('batches', '?')} "
                   f"batches, {hist.get('bytes', 0) // 1024} KiB; grafts "
                   f"{gossip.get('grafts_sent', 0)}, repaired {gossip.get('repaired', 0)}")
    ret = section_of(st, "retained")
    if ret:
        wills = section_of(st, "api").get("wills")
        yield _row("retained", f"{ret.get('topics', '?')} topics (at most "
                   f"{ret.get('max_topics', '?')}), {ret.get('bytes', 0) // 1024} KiB, "
                   f"{ret.get('tombstones', '?')} cleared"
                   + (f"; {wills} last wills published" if wills is not None else ""))
    req = section_of(st, "requests")
    if req:
        r = req.get
        yield _row("requests", f"asked {r('asked', 0)}, waiting {r('waiting', 0)}, delivered "
                   f"{r('delivered', 0)}; replies sent {r('replies_sent', 0)}, received "
                   f"{r('replies_in', 0)}, taken {r('replies_taken', 0)}, forwarded "
                   f"{r('replies_forwarded', 0)}; {r('paths', 0)} paths back")
    yield from _store_rows(section_of(st, "store"))
    yield from _member_rows(section_of(st, "members"))
    yield from _interest_rows(section_of(st, "interest"))
    drops = list(_drop_lines(st, before))
    yield _row("drops", drops[0] if drops else "none")
    yield from (_row("", line) for line in drops[1:])
    other = list(_other(st))
    if other:
        yield _row("other", " ".join(other))


def _store_rows(store: dict[str, Any]) -> Iterator[str]:
    """The message store (``p2pnode store`` shows more); nothing for a node without
    the section (an older node)."""
    if not store:
        return
    if store.get("enabled") is False:
        yield _row("store", "off (--store none): history in memory only")
        return
    s = store.get
    limit = s("max_bytes")
    of = "" if not isinstance(limit, int) else f" of {limit // 1024} KiB" if limit \
        else " (no limit)"
    yield _row("store", f"{s('messages', '?')} messages in {s('rows', '?')} batches, "
               f"{(s('bytes') or 0) // 1024} KiB{of}, sync {s('sync', '?')}; "
               f"{_count(s('durables'), 'durable subscription')}; {s('pending', '?')} "
               f"batches waiting to be written; {s('restored', '?')} restored at start "
               "(p2pnode store)")
    if s("error"):
        yield _row("", f"WRITES FAIL: {s('error')}")


def _interest_rows(interest: dict[str, Any]) -> Iterator[str]:
    """Interest routing (``--gossip interest``); nothing in the other modes."""
    if interest:
        i = interest.get
        yield _row("interest", f"received {i('wanted', '?')} batches wanted here, "
                   f"{i('relayed', '?')} only to pass on; sent on {i('routed', '?')} along "
                   f"trees, {i('off_tree', '?')} off them, {i('unrouted', '?')} to all "
                   f"(mesh not known yet); {i('fetch_asked', '?')} gaps fetched")


def _member_rows(mem: dict[str, Any]) -> Iterator[str]:
    """The member list (``p2pnode members`` lists them); nothing for an older node."""
    if not mem:
        return
    m = mem.get
    yield _row("members", f"{m('alive', '?')} alive, {m('suspect', '?')} suspect, "
               f"{m('dead', '?')} dead, {m('left', '?')} left; records {m('records', 0)}, "
               f"claims {m('claims', 0)}, stale {m('stale', 0)}, refutations "
               f"{m('refutations', 0)}; probes {m('probes', 0)} ({m('probes_cleared', 0)} "
               f"cleared, {m('probes_skipped', 0)} skipped), "
               f"{m('bytes_sent', 0) // 1024} KiB sent")
    interests = m("interests")
    if type(interests) is int:
        wants = "every topic" if interests < 0 else plural(interests, "topic or pattern",
                                                                   "topics or patterns")
        yield _row("", f"this node's record says its apps want {wants}")
    records, interests = m("records_paced", 0), m("interests_paced", 0)
    if records or interests:  # a member changes its record too fast: hostile or broken
        yield _row("", f"held back from members that change too fast: {records} records, "
                       f"{interests} interest changes")


def _row(label: str, text: str) -> str:
    return f"{label:<9} {text}".rstrip()


def _count(value: Any, noun: str) -> str:
    """``plural`` for a number from the reply, ``? nouns`` for anything else."""
    return plural(value, noun) if isinstance(value, int) else f"? {noun}s"


def _link_rows(st: dict[str, Any], peers: list[dict[str, Any]] | None) -> Iterator[str]:
    links = section_of(st, "links")
    closed = links.get("closed")
    n_closed = sum(closed.values()) if isinstance(closed, dict) else "?"
    yield _row("links", f"{st.get('peers', '?')} up ({links.get('opened', '?')} opened, "
               f"{n_closed} closed, {_count(links.get('dials'), 'dial')} since start)")
    if peers and len(peers) <= MAX_PEER_ROWS:
        rows: list[tuple[str, ...]] = [("NAME", "NODE", "DIR", "LISTEN", "UP", "RTT")]
        for p in peers:
            rtt, since = p.get("rtt_ms"), p.get("since_s")
            rows.append((str(p.get("name", "?")), str(p.get("node_id", "?"))[:8],
                         str(p.get("direction", "?")), str(p.get("listen") or p.get("addr", "?")),
                         format_duration(since) if isinstance(since, int | float) else "?",
                         f"{rtt:.1f} ms" if isinstance(rtt, int | float) else "-"))
        yield from (_row("", line) for line in table(rows))
    failures = links.get("failures")
    failures = [f for f in failures if isinstance(f, dict)] if isinstance(failures, list) else []
    for i, f in enumerate(failures[:MAX_PEER_ROWS]):
        count = f.get("count")
        yield _row("" if i else "failures",
                   f"{f.get('message', '?')} ({_count(count, 'time') if count else '?'}, "
                   f"last {format_duration(f.get('ago_s') or 0)} ago)")


def _bytes_text(st: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Rates of the byte counters (the links' unnamed, the others after their section:
    ``members sent``)."""
    parts = [f"{'' if section == 'links' else section + ' '}{key.removeprefix('bytes_')} "
             f"{format_rate(rate(before, st, section, key), ' B/s')}"
             for section, key in BYTE_COUNTERS if counter(st, section, key) is not None]
    return "  ".join(parts) or "not reported by this node"


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
    """Fields the schema does not know (a newer node reports more), as ``key=value``."""
    for key, value in st.items():
        if key in SECTION_NAMES and isinstance(value, dict):
            for sub, v in value.items():
                if f"{key}.{sub}" not in BY_PATH:
                    yield from _pairs(f"{key}.{sub}", v)
        elif key not in BY_PATH and key not in ENVELOPE:
            yield from _pairs(key, value)


def _pairs(key: str, value: Any) -> Iterator[str]:
    """``key=value`` items: a dict as one item per member (``key.member=...``), a list
    as its items joined by commas, text as it is, anything else as JSON."""
    if isinstance(value, dict):
        for sub, v in value.items():
            yield from _pairs(f"{key}.{sub}", v)
    elif isinstance(value, list):
        yield f"{key}=" + ",".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    else:
        yield f"{key}={value if isinstance(value, str) else json.dumps(value)}"
