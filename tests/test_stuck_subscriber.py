"""A local app that stops reading does not slow delivery to the other apps.

Real Unix sockets. The node never waits for a subscriber: events that do not fit in a
client's bounded queue are dropped and counted. So the test checks that, beside a
stuck subscriber, a healthy one gets every message while the stuck one's queue stays
within its bound (a node that waited for the stuck one would never finish: the
ceiling fails the test). How long it takes is for benchmarks, not for a test."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from p2pnode.client import open_client

from .conftest import loopback_config, running_nodes

TOTAL = 20_000


async def one_run(base: Path, with_stuck: bool) -> tuple[float, int, int]:
    """Seconds until a healthy subscriber has every message; events the stuck one lost;
    the most bytes any client's queue held (sampled at each publish reply)."""
    cfg = loopback_config(base, "hub", client_queue_bytes=512 * 1024)
    async with running_nodes([cfg]) as (node,):
        stuck = None
        if with_stuck:
            stuck = await trio.open_unix_socket(str(cfg.socket_path))
            await stuck.send_all(b'{"op":"subscribe","topics":["t"]}\n')  # never reads again
        async with await open_client(cfg.socket_path) as healthy, \
                await open_client(cfg.socket_path) as pub:
            await healthy.subscribe(["t"])
            start = time.perf_counter()
            got = 0
            most_queued = 0

            async def receive() -> None:
                nonlocal got
                while got < TOTAL:
                    await healthy.next_event()
                    got += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                for k in range(TOTAL // 500):
                    for j in range(500):
                        await pub.send({"op": "publish", "topic": "t", "data": f"{k}-{j:0>95}"})
                    for _ in range(500):
                        await pub.reply()
                    assert node.api is not None
                    most_queued = max(most_queued, *(len(s.out) for s in node.api.sessions))
            took = time.perf_counter() - start
        assert node.api is not None
        dropped = node.api.stats.events_dropped
        if stuck is not None:
            await stuck.aclose()
        return took, dropped, most_queued


async def test_a_stuck_subscriber_does_not_slow_the_others(short_tmp: Path) -> None:
    with trio.fail_after(60):
        took, dropped, most_queued = await one_run(short_tmp, with_stuck=True)
    assert dropped > 0  # the stuck app's queue overflowed, and the drops were counted
    assert most_queued <= 512 * 1024  # ... and stayed within client_queue_bytes
    print(f"healthy subscriber, {TOTAL} messages beside a stuck one: {took:.3f}s")
