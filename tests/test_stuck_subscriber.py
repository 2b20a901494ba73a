"""A local app that stops reading does not slow delivery to the other apps.

Real Unix sockets and real time: each setting runs three times, interleaved, and the
fastest run of each is compared (the minimum is robust to a noisy machine)."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from p2pnode.client import open_client

from .conftest import loopback_config, running_nodes

TOTAL = 20_000


async def one_run(base: Path, with_stuck: bool) -> tuple[float, int]:
    """Seconds until a healthy subscriber has every message; events the stuck one lost."""
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
            took = time.perf_counter() - start
        assert node.api is not None
        dropped = node.api.stats.events_dropped
        if stuck is not None:
            await stuck.aclose()
        return took, dropped


async def test_a_stuck_subscriber_does_not_slow_the_others(short_tmp: Path) -> None:
    runs: dict[bool, list[float]] = {False: [], True: []}
    with trio.fail_after(120):
        for _ in range(3):
            for with_stuck in (False, True):
                took, dropped = await one_run(short_tmp, with_stuck)
                runs[with_stuck].append(took)
                assert (dropped > 0) is with_stuck  # the stuck app's queue overflowed
    best_plain, best_stuck = min(runs[False]), min(runs[True])
    print(f"healthy subscriber, {TOTAL} messages: {best_plain:.3f}s alone, "
          f"{best_stuck:.3f}s beside a stuck one")
    assert best_stuck <= best_plain * 1.2, runs
