"""`p2pnode status`: the readable summary, its rates, drops and unknown fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from p2pnode.api.status_fields import FIELDS, Field
from p2pnode.cli.statusview import NOT_SHOWN, format_duration, rate, summary

from .test_status_schema import full_reply


def reply(uptime: float, delivered: int, queue_drops: int) -> dict[str, Any]:
    return {
        "ok": True, "node_id": "17aaacfe000f567446b9741628498f0e", "name": "b",
        "listen": "127.0.0.1:7002", "version": "0.1.0", "protocol": 3, "uptime_s": uptime,
        "peers": 1, "socket": "/tmp/b.sock", "clients": 1,
        "messages": {"published": 0, "received": delivered // 2, "delivered": delivered,
                     "duplicates": 0, "forwarded": 0, "hop_limited": 0, "rejected": 0,
                     "rate_limited": 0, "seen_cache": 2},
        "links": {"opened": 2, "closed": {"timeout": 1}, "dials": 1, "dials_failed": 0,
                  "queue_drops": queue_drops, "refused": {}, "refused_by_peer": {},
                  "handshake_failed": {}, "discovered_ignored": 0, "pruned": 0,
                  "pings_lost": 0},
        "security": {"links": "tls1.3", "network": "open", "members_only": False},
        "api": {"requests": 6, "errors": 0, "events_dropped": 0},
    }


def test_rates_between_two_replies_and_over_uptime() -> None:
    before, after = reply(10.0, 100, 0), reply(12.0, 300, 5)
    assert rate(before, after, "messages", "delivered") == 100.0
    assert rate(None, after, "messages", "delivered") == 25.0
    assert rate(before, after, "messages", "nothing") is None
    assert format_duration(3725) == "1h 2m 5s"
    assert format_duration(86400 + 5) == "1d 5s"


def test_summary_shows_links_rates_and_drops_with_reasons() -> None:
    peers = [{"node_id": "96f10c649eca5b14f09dce126bf02e49", "name": "a", "direction": "out",
              "addr": "127.0.0.1:7001", "since_s": 65.2, "rtt_ms": 0.42}]
    text = summary(reply(12.0, 300, 5), reply(10.0, 100, 0), peers)
    lines = text.splitlines()
    assert lines[0] == "node      b (17aaacfe000f567446b9741628498f0e), p2pnode 0.1.0, protocol 3"
    assert "listen    127.0.0.1:7002, socket /tmp/b.sock, 1 API client" in lines
    assert "links     1 up (2 opened, 1 closed, 1 dial since start)" in lines
    assert "          NAME  NODE      DIR  LISTEN          UP     RTT" in lines
    assert "          a     96f10c64  out  127.0.0.1:7001  1m 5s  0.4 ms" in lines
    assert ("messages  published 0.0/s  delivered 100/s  (over the last 2.0s)") in lines
    assert "bytes     not reported by this node" in lines
    assert ("drops     5 batch copies dropped: a peer's send queue was full (+5 just now)"
            in lines)
    assert "          links closed: timeout 1" in lines
    assert not any(line.startswith("other") for line in lines)


def test_peer_rows_are_a_table_whatever_the_lengths() -> None:
    peers = [{"node_id": "96f10c649eca5b14f09dce126bf02e49", "name": "a", "direction": "out",
              "addr": "127.0.0.1:7001", "since_s": 65.2, "rtt_ms": 0.42},
             {"node_id": "4e6f1d2a0c3b5e7f9a8b7c6d5e4f3a2b", "name": "kitchen-sensor",
              "direction": "in", "addr": "[fe80::1%eth0]:40522", "since_s": 7200.0},
             {"name": "old"}]  # a node that reports less
    st = reply(12.0, 300, 0)
    st["links"]["dials"] = 2
    st["clients"] = 3
    lines = summary(st, None, peers).splitlines()
    assert "links     1 up (2 opened, 1 closed, 2 dials since start)" in lines
    assert "listen    127.0.0.1:7002, socket /tmp/b.sock, 3 API clients" in lines
    start = lines.index(next(line for line in lines if "NAME" in line))
    rows = lines[start:start + 4]
    assert rows == [
        "          NAME            NODE      DIR  LISTEN                UP     RTT",
        "          a               96f10c64  out  127.0.0.1:7001        1m 5s  0.4 ms",
        "          kitchen-sensor  4e6f1d2a  in   [fe80::1%eth0]:40522  2h 0s  -",
        "          old             ?         ?    ?                     ?      -"]
    # Each column starts at the same place on every row.
    for header in ("NODE", "DIR", "LISTEN", "UP", "RTT"):
        col = rows[0].index(header)
        assert all(row[col - 2:col] == "  " and row[col] != " " for row in rows), header


def test_summary_survives_missing_and_new_fields() -> None:
    text = summary({"name": "x", "links": {"bytes_sent": 2048, "new_counter": 3},
                    "extra": [1]}, None, None)
    assert "node      x (?), p2pnode ?, protocol ?" in text
    assert "bytes     sent ?" in text                 # no uptime: no rate
    assert "other     links.new_counter=3 extra=1" in text
    text = summary({"uptime_s": 4.0, "links": {"bytes_sent": 2048}})
    assert "bytes     sent 512 B/s" in text


def test_the_bytes_row_names_the_member_frames_apart_from_the_links() -> None:
    text = summary({"uptime_s": 4.0, "links": {"bytes_sent": 4096, "bytes_received": 2048},
                    "members": {"bytes_sent": 1024}})
    assert "bytes     sent 1,024 B/s  received 512 B/s  members sent 256 B/s" in text


def test_summary_shows_the_mesh_view_gossip_and_order_gaps() -> None:
    st = reply(10.0, 5, 0)
    st["mesh_view"] = {"nodes": 7, "links": 9, "bad_lists": 0}
    st["history"] = {"batches": 12, "bytes": 40960, "evicted": 0}
    st["gossip"] = {"mode": "tree", "grafts_sent": 3, "repaired": 4, "missing_given_up": 0}
    st["messages"]["order_gaps"] = 2
    text = summary(st)
    assert "7 nodes, 9 links" in text
    st["mesh_view"] = {"nodes": 1, "links": 1, "bad_lists": 0}
    assert "mesh view 1 node, 1 link (p2pnode mesh)" in summary(st).splitlines()
    assert "tree; history 12 batches, 40 KiB; grafts 3, repaired 4" in text
    assert "2 messages never came" in text


def other_value(field: Field, value: Any) -> Any:
    """A value of the field's kind unlike ``value``."""
    if field.kind in ("counter", "gauge"):
        return value + 100_000
    if field.kind == "flag":
        return not value
    if field.kind == "info":
        return value + 1 if isinstance(value, int) else f"{value}-other"
    if field.kind == "by_reason":
        return {"other_reason": 100_000}
    return []


def test_every_field_is_shown_or_listed_as_not_shown() -> None:
    """The summary changes when a field changes, unless the field is in NOT_SHOWN (and
    then it does not): a field added to the schema must be shown, or said not to be."""
    base = full_reply()
    text = summary(base)
    assert not any(line.startswith("other") for line in text.splitlines())  # all known
    shown = set()
    for field in FIELDS:
        section = base[field.section] if field.section else base
        changed = full_reply({field.path: other_value(field, section[field.name])})
        if summary(changed) != text:
            shown.add(field.path)
    assert NOT_SHOWN <= {f.path for f in FIELDS}, "NOT_SHOWN names fields the schema lacks"
    assert not shown & NOT_SHOWN, f"NOT_SHOWN but shown: {sorted(shown & NOT_SHOWN)}"
    missing = sorted({f.path for f in FIELDS} - shown - NOT_SHOWN)
    assert not missing, f"neither shown by `p2pnode status` nor in NOT_SHOWN: {missing}"


def test_fields_of_a_newer_node_are_listed_under_other() -> None:
    st = full_reply()
    st["links"]["bytes_lost"] = 7
    st["quorum"] = {"size": 3}
    st["api"].pop("replays")  # an older node: left out, no error
    lines = summary(st).splitlines()
    (other,) = (line for line in lines if line.startswith("other"))
    assert other == "other     links.bytes_lost=7 quorum.size=3"
    # Nested and listed values of any kind: no Python reprs ({'...': ...}, [...], None).
    st["gossip"]["new"] = {"mode": "tree", "lazy": {"n": 1}, "x": None, "ok": True}
    st["zones"] = ["a", 1, {"b": 2}]
    (other,) = (line for line in summary(st).splitlines() if line.startswith("other"))
    assert other == ('other     gossip.new.mode=tree gossip.new.lazy.n=1 gossip.new.x=null '
                     'gossip.new.ok=true links.bytes_lost=7 quorum.size=3 '
                     'zones=a,1,{"b": 2}')
    assert "{'" not in other
    assert "None" not in other


def test_cli_md_explains_every_drop() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    table = text[text.index("The reasons shown under `drops`:"):]
    table = table[:table.index("\n\n", table.index("| text |"))]
    named = {path for row in table.splitlines()[3:]
             for path in re.findall(r"`([a-z_]+\.[a-z_]+)`", row.split(" | ")[1])}
    drops = {f.path for f in FIELDS if f.drop and f.kind == "counter"}
    assert drops == named, (sorted(drops - named), sorted(named - drops))
