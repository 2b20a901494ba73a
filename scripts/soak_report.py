"""The soak's accounting (scripts/soak.py): reads the apps' records (soak_apps.py)
and counts, exactly, what was published, what each subscriber got, lost, got twice
or out of order, and how each restart went.

Definitions:

- **published**: the messages whose publish the node confirmed (``ok``).
  **expected deliveries**: published x subscribers. **lost**: an expected delivery
  that never came (by the end of the drain).
- **unconfirmed**: publishes whose reply was lost with the connection (the node was
  killed): they may or may not have been published, so they are not counted as
  lost; but one that some subscriber got and others never did is counted apart
  (``unconfirmed_delivered_to_some``, ``unconfirmed_deliveries_missing``).
- **duplicate**: a message delivered again to a subscriber that had it.
  ``after_restart``: its first copy came in an earlier session, i.e. before the
  subscriber's node was restarted; ``other``: both copies in the same session.
- **out of order**: a first delivery whose number is lower than the highest number
  already delivered from the same publisher to the same subscriber.
- **catch-up** of a restart: from the node being back (ready) until its subscriber
  had every published message sent before that moment (``from_resubscribe``:
  from the subscriber's subscribe with ``since`` being answered).
- a lost message is **near** a restart of the subscriber's node when it was
  published between ``NEAR`` seconds before the kill and ``NEAR`` seconds after the
  subscriber resubscribed; **of its publisher** when the publisher on the killed
  host sent it in the ``NEAR`` seconds before the kill.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NEAR = 5.0  # seconds
Key = tuple[int, int]  # (publisher, number)
MAX_SAMPLE = 10  # lost messages listed per subscriber


@dataclasses.dataclass
class Restart:
    """One SIGKILL and restart of a host's node (monotonic times)."""

    host: str
    killed: float
    ready: float
    session: dict[str, Any] | None = None  # the subscriber's session after it
    catch_up_end: float | None = None
    lost_near: int = 0  # lost deliveries to its subscriber near it
    lost_own: int = 0  # lost deliveries of what its publisher sent just before the kill
    partial_own: int = 0  # the same, of unconfirmed messages some subscriber got


@dataclasses.dataclass
class Published:
    """What the publishers' records say, per message key ``(publisher, number)``."""

    ok: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)  # -> t_sent
    unknown: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)
    refused: int = 0
    connects: int = 0


def lines(path: Path) -> Iterator[list[str]]:
    """The complete records of a file (a last line cut short by a kill is skipped)."""
    with path.open(encoding="utf-8", errors="replace") as file:
        for line in file:
            if line.endswith("\n"):
                yield line.rstrip("\n").split("\t")


def read_publisher(index: int, path: Path, into: Published) -> None:
    for rec in lines(path):
        try:
            if rec[0] == "ok" and len(rec) == 5:
                into.ok[(index, int(rec[1]))] = float(rec[2])
            elif rec[0] == "lost" and len(rec) == 4:
                into.unknown[(index, int(rec[1]))] = float(rec[2])
            elif rec[0] == "err" and len(rec) == 4:
                into.refused += 1
                into.ok.pop((index, int(rec[1])), None)
            elif rec[0] == "conn":
                into.connects += 1
        except ValueError:
            continue


@dataclasses.dataclass
class Subscriber:
    """One subscriber's deliveries, counted as its record is read."""

    host: str
    got: dict[tuple[int, int], tuple[float, int]] = dataclasses.field(default_factory=dict)
    sessions: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    events: int = 0
    dup_after_restart: int = 0
    dup_other: int = 0
    out_of_order: int = 0
    foreign: int = 0  # message events that are not soak payloads
    node_dropped: int = 0
    client_dropped: int = 0
    highest: dict[int, int] = dataclasses.field(default_factory=dict)

    def session(self, number: int) -> dict[str, Any]:
        return self.sessions.setdefault(number, {
            "session": number, "messages": 0, "duplicates_after_restart": 0,
            "duplicates_other": 0, "out_of_order": 0})

    def message(self, session: int, t: float, publisher: int, number: int) -> None:
        self.events += 1
        info = self.session(session)
        info["messages"] += 1
        key = (publisher, number)
        first = self.got.get(key)
        if first is not None:
            if first[1] < session:
                self.dup_after_restart += 1
                info["duplicates_after_restart"] += 1
            else:
                self.dup_other += 1
                info["duplicates_other"] += 1
            return
        self.got[key] = (t, session)
        if number < self.highest.get(publisher, -1):
            self.out_of_order += 1
            info["out_of_order"] += 1
        else:
            self.highest[publisher] = number

    def record(self, rec: list[str]) -> None:
        kind, session = rec[0], int(rec[1])
        if kind == "M" and len(rec) == 7:
            if rec[4].isdigit() and rec[5].isdigit():
                self.message(session, float(rec[2]), int(rec[4]), int(rec[5]))
            else:
                self.foreign += 1
        elif kind == "S" and len(rec) == 8:
            self.session(session).update({
                "connected": float(rec[2]), "subscribed": float(rec[3]),
                "replayed": int(rec[4]), "node_dropped": int(rec[5]),
                "since_found": rec[6]})
            self.node_dropped += int(rec[5])
        elif kind == "D" and len(rec) == 4:
            self.node_dropped += int(rec[3])
        elif kind == "E" and len(rec) == 5:
            self.client_dropped += int(rec[3])


def read_subscriber(host: str, path: Path) -> Subscriber:
    sub = Subscriber(host)
    for rec in lines(path):
        try:
            sub.record(rec)
        except (ValueError, IndexError):
            continue
    return sub


def received_keys(path: Path, offset: int, into: set[tuple[int, int]]) -> int:
    """Add the keys of the messages recorded in ``path`` after ``offset`` to ``into``;
    return the new offset (for the drain, which reads the files while they grow)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].split(b"\n"):
        rec = line.split(b"\t")
        if len(rec) == 7 and rec[0] == b"M" and rec[4].isdigit() and rec[5].isdigit():
            into.add((int(rec[4]), int(rec[5])))
    return offset + end


def attach_restarts(sub: Subscriber, restarts: list[Restart],
                    sent: dict[tuple[int, int], float], lost: set[tuple[int, int]]) -> None:
    """Fill in each restart of ``sub``'s host: its session, catch-up and lost messages."""
    mine = [r for r in restarts if r.host == sub.host]
    if not mine:
        return
    starts = sorted((s.get("connected", 0.0), s) for s in sub.sessions.values())
    for r in mine:
        r.session = next((s for t, s in starts if t >= r.killed), None)
    for key, (t, _) in sub.got.items():
        t_pub = sent.get(key)
        if t_pub is None:
            continue
        for r in mine:
            if t_pub < r.ready < t and (r.catch_up_end is None or t > r.catch_up_end):
                r.catch_up_end = t
    for key in lost:
        t_pub = sent.get(key)
        for r in mine:
            resub = r.session.get("subscribed", r.ready) if r.session else r.ready
            if t_pub is not None and r.killed - NEAR <= t_pub <= resub + NEAR:
                r.lost_near += 1
                break


def restart_row(r: Restart, t0: float) -> dict[str, Any]:
    s = r.session or {}
    subscribed = s.get("subscribed")
    end = r.catch_up_end if r.catch_up_end is not None else r.ready
    return {
        "host": r.host, "at_s": round(r.killed - t0, 2), "down_s": round(r.ready - r.killed, 2),
        "resubscribed_after_s": (round(subscribed - r.ready, 2)
                                 if subscribed is not None else None),
        "replayed": s.get("replayed"), "node_dropped": s.get("node_dropped"),
        "since_found": s.get("since_found"),
        "catch_up_s": round(end - r.ready, 2),
        "catch_up_from_resubscribe_s": (round(max(0.0, end - subscribed), 2)
                                        if subscribed is not None else None),
        "duplicates_after_restart": s.get("duplicates_after_restart", 0),
        "duplicates_other": s.get("duplicates_other", 0),
        "out_of_order": s.get("out_of_order", 0),
        "lost_near": r.lost_near, "lost_of_its_publisher": r.lost_own,
        "unconfirmed_missing_of_its_publisher": r.partial_own,
    }


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def attach_publisher_kills(restarts: list[Restart], missing: dict[Key, tuple[int, int]],
                           sent: dict[Key, float], host_of: dict[int, str]) -> None:
    """Count, for each restart, the deliveries missing of messages that the publisher
    on the killed host sent in the ``NEAR`` seconds before the kill."""
    for key, (lost, partial) in missing.items():
        t = sent.get(key)
        for r in restarts:
            if t is not None and host_of.get(key[0]) == r.host and r.killed - NEAR <= t \
                    <= r.killed:
                r.lost_own += lost
                r.partial_own += partial


def subscriber_row(sub: Subscriber, lost: set[Key], partial: set[Key],
                   sent: dict[Key, float], t0: float) -> dict[str, Any]:
    when = sorted((sent[k] - t0, k) for k in lost if k in sent)
    return {
        "host": sub.host, "lost": len(lost), "unconfirmed_missing": len(partial),
        "duplicates_after_restart": sub.dup_after_restart,
        "duplicates_other": sub.dup_other, "out_of_order": sub.out_of_order,
        "sessions": len(sub.sessions), "node_dropped": sub.node_dropped,
        "client_dropped": sub.client_dropped, "foreign": sub.foreign,
        "lost_sample": [f"p{k[0]}#{k[1]} sent at {t:.2f} s" for t, k in when[:MAX_SAMPLE]]}


def account(pub: Published, subs: list[Subscriber], restarts: list[Restart], t0: float,
            host_of: dict[int, str] | None = None) -> dict[str, Any]:
    """The soak's figures (see the module). ``host_of``: publisher -> its host
    (default publisher i on host hi)."""
    confirmed = set(pub.ok)
    seen = set().union(*(sub.got.keys() & pub.unknown.keys() for sub in subs))
    sent = pub.unknown | pub.ok
    missing: dict[Key, tuple[int, int]] = {}
    per_sub = []
    for sub in subs:
        lost, partial = confirmed - sub.got.keys(), seen - sub.got.keys()
        attach_restarts(sub, restarts, sent, lost)
        per_sub.append(subscriber_row(sub, lost, partial, sent, t0))
        for key in lost | partial:
            n, p = missing.get(key, (0, 0))
            missing[key] = (n + (key in lost), p + (key in partial))
    attach_publisher_kills(restarts, missing, sent,
                           host_of or {i: f"h{i}" for i, _ in sent})
    rows = [restart_row(r, t0) for r in restarts]
    lost_total = sum(row["lost"] for row in per_sub)
    partly = {k for k in seen if missing.get(k, (0, 0))[1]}
    return {
        "published": len(confirmed), "refused": pub.refused,
        "deliveries_expected": len(confirmed) * len(subs),
        "deliveries_got": len(confirmed) * len(subs) - lost_total,
        "lost": lost_total,
        "unconfirmed": len(pub.unknown), "unconfirmed_delivered_to_all": len(seen - partly),
        "unconfirmed_delivered_to_some": len(partly),
        "unconfirmed_deliveries_missing": sum(r["unconfirmed_missing"] for r in per_sub),
        "events_got": sum(s.events for s in subs),
        "duplicates_after_restart": sum(s.dup_after_restart for s in subs),
        "duplicates_other": sum(s.dup_other for s in subs),
        "out_of_order": sum(s.out_of_order for s in subs),
        "node_dropped": sum(s.node_dropped for s in subs),
        "client_dropped": sum(s.client_dropped for s in subs),
        "restarts": len(restarts),
        "catch_up_s": spread([row["catch_up_s"] for row in rows]),
        "catch_up_from_resubscribe_s": spread(
            [row["catch_up_from_resubscribe_s"] for row in rows
             if row["catch_up_from_resubscribe_s"] is not None]),
        "per_subscriber": per_sub, "per_restart": rows,
    }


def passes(figures: dict[str, Any]) -> bool:
    """The issue's bar: nothing lost, no duplicate after a restart, per-origin order."""
    return bool(figures["lost"] == 0 and figures["duplicates_after_restart"] == 0
                and figures["out_of_order"] == 0 and figures["published"] > 0)


def format_text(result: dict[str, Any]) -> str:
    f = result["figures"]
    out = [
        f"soak: {result['command']}",
        f"published (confirmed) {f['published']:,} ({f.get('published_per_s', '?')}/s), "
        f"refused {f['refused']:,}; unconfirmed {f['unconfirmed']:,}: delivered to all "
        f"{f['unconfirmed_delivered_to_all']:,}, to some {f['unconfirmed_delivered_to_some']:,}"
        f" ({f['unconfirmed_deliveries_missing']:,} deliveries missing)",
        f"deliveries expected {f['deliveries_expected']:,}, got {f['deliveries_got']:,} "
        f"(events {f['events_got']:,})",
        f"lost {f['lost']:,}  duplicates after a restart {f['duplicates_after_restart']:,}"
        f"  other duplicates {f['duplicates_other']:,}  out of order {f['out_of_order']:,}",
        f"events dropped: by the nodes {f['node_dropped']:,}, by the clients "
        f"{f['client_dropped']:,}",
        f"restarts {f['restarts']}, catch-up s {f['catch_up_s']}, from the resubscribe "
        f"{f['catch_up_from_resubscribe_s']}",
        "per restart: host at_s down_s resub_s replayed since_found catch_up_s dups ooo "
        "lost_near lost_of_its_publisher",
    ]
    for r in f["per_restart"]:
        out.append(f"  {r['host']:>4} {r['at_s']:7.1f} {r['down_s']:6.2f} "
                   f"{r['resubscribed_after_s']!s:>6} {r['replayed']!s:>8} "
                   f"{r['since_found']!s:>5} {r['catch_up_s']:7.2f} "
                   f"{r['duplicates_after_restart']:>6} "
                   f"{r['out_of_order']:>6} {r['lost_near']:>6} "
                   f"{r['lost_of_its_publisher']:>6}")
    out.append("per subscriber: " + ", ".join(
        f"{s['host']} lost {s['lost']} dup {s['duplicates_after_restart']}+"
        f"{s['duplicates_other']} ooo {s['out_of_order']}" for s in f["per_subscriber"]))
    out.append("PASS" if result["passes"] else
               "FAIL: the bar is 0 lost, 0 duplicates after a restart, 0 out of order")
    return "\n".join(out)
