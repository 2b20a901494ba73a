"""Issue 12, defect 4: a flood of ``subscribe`` with ``since`` must not freeze the node.

Real nodes (loopback TCP with TLS, real Unix sockets): a client fills node A's
history, then sends hundreds of replay requests in one write. Meanwhile two
ping-pong probes (an app on A to an app on A, an app on B to an app on A) must keep
going with a bounded latency, the link A-B must stay up, the flood must get
``rate_limited`` past the per-client limit, and an honest app that catches up with
``since`` during the flood must get exactly the messages it missed, then the live
ones, in order, once each.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from p2pnode.client import Client, open_client
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes

FLOOD = 400  # replay requests in one write
LATENCY_BOUND = 0.5  # seconds; the old code stalled for several seconds


async def fill(client: Client, topic: str, count: int, padding: int = 0) -> list[str]:
    """Publish ``count`` messages "0", "1", ... (with ``padding`` more bytes each),
    pipelined; return their ids."""
    pad = " " + "x" * (padding - 1) if padding else ""
    ids: list[str] = []
    for start in range(0, count, 500):
        n = min(500, count - start)
        lines = b"".join(json.dumps({"op": "publish", "topic": topic,
                                     "data": f"{start + k}{pad}"}).encode() + b"\n"
                         for k in range(n))
        await client.stream.send_all(lines)
        ids += [(await client.reply())["msg_id"] for _ in range(n)]
    return ids


async def ping_pong(pub: Client, sub: Client, topic: str, done: trio.Event,
                    latencies: list[float]) -> None:
    """Publish on ``pub``, wait for it on ``sub``, again, until ``done``."""
    k = 0
    while not done.is_set():
        start = trio.current_time()
        await pub.publish(topic, str(k))
        event = await sub.next_event()
        assert (event["topic"], event["data"]) == (topic, str(k))
        latencies.append(trio.current_time() - start)
        k += 1


async def flood(node: Node, requests: int) -> tuple[int, list[dict[str, object]]]:
    """Send ``requests`` replay requests in one write; return (ok replies, errors)."""
    line = b'{"op":"subscribe","topics":["nothing"],"since":0}\n'
    ok, errors = 0, []
    async with await open_client(node.config.socket_path) as attacker:
        await attacker.stream.send_all(line * requests)
        for _ in range(requests):
            reply = await attacker.reply()
            if reply["ok"]:
                ok += 1
            else:
                errors.append(reply["error"])
    return ok, errors


async def honest_catch_up(node: Node, since: str, last: int,
                          got: list[tuple[str, bool]]) -> None:
    """Catch up on topic "h" after message ``since`` while the flood goes on and
    messages keep coming, then receive live until message ``last``; appends (data,
    replayed) to ``got`` in order."""
    async with await open_client(node.config.socket_path) as client:
        reply = await client.subscribe(["h"], since=since)
        assert reply["since_found"] is True
        while not got or got[-1][0] != str(last):
            event = await client.next_event()
            got.append((event["data"], bool(event.get("replay"))))
        assert len([g for g in got if g[1]]) == reply["replayed"]


async def publish_h(client: Client, first: int, last: int) -> None:
    """Publish "h" messages ``first``..``last``, one after the other."""
    for k in range(first, last + 1):
        await client.publish("h", str(k))


async def test_a_replay_flood_leaves_links_and_other_clients_alone(short_tmp: Path) -> None:
    with trio.fail_after(60):
        cfg_a = loopback_config(short_tmp, "a", history_bytes=2 << 20)
        async with running_nodes([cfg_a]) as (a,):
            assert a.listen_addr is not None
            cfg_b = loopback_config(short_tmp, "b", peers=(("127.0.0.1", a.listen_addr[1]),))
            async with running_nodes([cfg_b]) as (b,), \
                    await open_client(a.config.socket_path) as filler, \
                    await open_client(a.config.socket_path) as pub_a, \
                    await open_client(a.config.socket_path) as sub_aa, \
                    await open_client(a.config.socket_path) as sub_ba, \
                    await open_client(b.config.socket_path) as pub_b:
                await pub_b.peers(wait_min=1)
                await sub_aa.subscribe(["probe-aa"])
                await sub_ba.subscribe(["probe-ba"])
                h_ids = await fill(filler, "h", 40)
                await fill(filler, "bulk", 7000, 100)  # about 0.9 MiB of history
                assert a.router.history.bytes > 850_000
                closed_before = (dict(a.links.stats.closed) if a.links else {},
                                 dict(b.links.stats.closed) if b.links else {})

                done = trio.Event()
                lat_aa: list[float] = []
                lat_ba: list[float] = []
                got: list[tuple[str, bool]] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ping_pong, pub_a, sub_aa, "probe-aa", done, lat_aa)
                    nursery.start_soon(ping_pong, pub_b, sub_ba, "probe-ba", done, lat_ba)
                    async with trio.open_nursery() as honest:
                        honest.start_soon(publish_h, filler, 40, 99)
                        honest.start_soon(honest_catch_up, a, h_ids[9], 99, got)
                        ok, errors = await flood(a, FLOOD)
                    done.set()

                # (1) The link stayed up; the probes kept going, with a bounded latency.
                assert a.links is not None
                assert b.links is not None
                assert (dict(a.links.stats.closed), dict(b.links.stats.closed)) == closed_before
                assert len(a.links.links) == 1
                assert lat_aa
                assert lat_ba
                assert max(lat_aa) < LATENCY_BOUND, max(lat_aa)
                assert max(lat_ba) < LATENCY_BOUND, max(lat_ba)
                # (2) Past the burst, the flood is refused, with a clear error.
                burst = 4 * a.config.client_replays_per_s
                assert burst <= ok < burst + 10
                assert len(errors) == FLOOD - ok
                assert {e["code"] for e in errors} == {"rate_limited"}
                assert "since" in str(errors[0]["message"])
                # (3) The honest app got h10..h99 once each, in order: the replayed ones
                # first, then the live ones.
                assert [data for data, _ in got] == [str(k) for k in range(10, 100)]
                flags = [replayed for _, replayed in got]
                assert flags == sorted(flags, reverse=True)
                assert flags[:30] == [True] * 30  # h10..h39 were in history
