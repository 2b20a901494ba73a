"""`p2pnode status`: the readable summary, its rates, drops and unknown fields."""

from __future__ import annotations

from typing import Any

from p2pnode.cli.statusview import format_duration, rate, summary


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
    assert "links     1 up (2 opened, 1 closed, 1 dials since start)" in lines
    assert "          a  96f10c64  out  127.0.0.1:7001  up 1m 5s  rtt 0.4 ms" in lines
    assert ("messages  published 0.0/s  delivered 100/s  (over the last 2.0s)") in lines
    assert "bytes     not reported by this node" in lines
    assert ("drops     5 batch copies dropped: a peer's send queue was full (+5 just now)"
            in lines)
    assert "          links closed: timeout 1" in lines
    assert not any(line.startswith("other") for line in lines)


def test_summary_survives_missing_and_new_fields() -> None:
    text = summary({"name": "x", "links": {"bytes_sent": 2048, "new_counter": 3},
                    "extra": [1]}, None, None)
    assert "node      x (?), p2pnode ?, protocol ?" in text
    assert "bytes     bytes_sent ?" in text                 # no uptime: no rate
    assert "other     links.new_counter=3 extra=[1]" in text
    text = summary({"uptime_s": 4.0, "links": {"bytes_sent": 2048}})
    assert "bytes     bytes_sent 512 B/s" in text


def test_summary_shows_the_mesh_view_gossip_and_order_gaps() -> None:
    st = reply(10.0, 5, 0)
    st["mesh_view"] = {"nodes": 7, "links": 9, "bad_lists": 0}
    st["history"] = {"batches": 12, "bytes": 40960, "evicted": 0}
    st["gossip"] = {"mode": "tree", "grafts_sent": 3, "repaired": 4, "missing_given_up": 0}
    st["messages"]["order_gaps"] = 2
    text = summary(st)
    assert "7 nodes, 9 links" in text
    assert "tree; history 12 batches, 40 KiB; grafts 3, repaired 4" in text
    assert "2 messages never came" in text
