"""``kill -9`` of a node in the middle of a publish burst, with real processes on
loopback (mDNS off): its app, resuming with ``since`` the last message it got, gets
every message once and in order (issue 17)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from p2pnode.client import Client, ConnectionClosed, open_client

from .test_cli import Proc, spawn

TOTAL = 3000


def run_args(base: Path, name: str, peer: str | None) -> list[str]:
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name,
            "--socket", str(base / f"{name}.sock"), "--data-dir", str(base / name)]
    return [*args, "--peer", peer] if peer else args


async def publish_all(sock: Path, done: trio.Event) -> None:
    async with await open_client(sock) as client:
        for k in range(TOTAL):
            await client.publish("burst", f"m{k}")
            if k % 50 == 49:
                await client.flush()
                await trio.sleep(0.005)
        await client.flush()
    done.set()


async def read_until(client: Client, got: list[dict[str, object]], count: int) -> None:
    """Read ``burst`` events into ``got`` until it has ``count``, or the node goes."""
    try:
        while len(got) < count:
            event = await client.next_event()
            if event.get("event") == "message":
                got.append(event)
    except (ConnectionClosed, trio.EndOfChannel):
        pass


async def test_kill_9_mid_burst_then_since_gets_every_message_once_in_order(
    short_tmp: Path,
) -> None:
    got: list[dict[str, object]] = []
    with trio.fail_after(90):
        async with spawn(run_args(short_tmp, "a", None)) as a:
            port = (await a.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
            b_args = run_args(short_tmp, "b", f"127.0.0.1:{port}")
            async with spawn(b_args) as b:
                await b.wait_line("link up: a")
                published = trio.Event()
                async with trio.open_nursery() as nursery:
                    async with await open_client(short_tmp / "b.sock") as sub:
                        await sub.subscribe(["burst"])
                        nursery.start_soon(publish_all, short_tmp / "a.sock", published)
                        await read_until(sub, got, 800)
                        os.kill(b.process.pid, signal.SIGKILL)  # in the middle of the burst
                        await read_until(sub, got, TOTAL)
                    await b.process.wait()
                    assert len(got) < TOTAL
                    async with spawn(b_args) as again:
                        await again.wait_line("link up: a")
                        await published.wait()
                        await resume(short_tmp / "b.sock", got, again)
    datas = [e["data"] for e in got]
    assert datas == [f"m{k}" for k in range(TOTAL)]


async def resume(sock: Path, got: list[dict[str, object]], node: Proc) -> None:
    before = len(got)
    async with await open_client(sock) as sub:
        reply = await sub.subscribe(["burst"], since=str(got[-1]["msg_id"]))
        assert reply["since_found"] is True, (reply, node.seen[-5:])
        await read_until(sub, got, TOTAL)
    assert len(got) > before
