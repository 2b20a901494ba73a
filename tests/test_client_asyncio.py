"""The asyncio client against real nodes. trio runs the nodes; the asyncio code runs
in a worker thread (``asyncio.run``), each with its own ``asyncio.timeout``."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from p2pnode.client import (
    ApiReplyError,
    AsyncioClient,
    ConnectionClosed,
    PublishError,
    UntrustedServer,
    open_asyncio_client,
    peers_request,
)
from p2pnode.client.aio import open_client

from .conftest import loopback_config, running_nodes
from .test_client_pipeline import two_nodes
from .test_local_users import (
    NOBODY,
    PYTHON_FOR_NOBODY,
    SERVE_AS_NOBODY,
    needs_nobody_python,
    needs_root,
)

T = TypeVar("T")


async def in_asyncio(fn: Callable[[], Awaitable[T]], limit: float = 10) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await fn()

    return await trio.to_thread.run_sync(asyncio.run, bounded())


async def test_the_asyncio_client_end_to_end(short_tmp: Path) -> None:
    n = 2000
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):

            async def app() -> dict[str, Any]:
                out: dict[str, Any] = {}
                assert open_asyncio_client is open_client
                async with open_client(b.config.socket_path) as sub:
                    assert isinstance(sub, AsyncioClient)
                    out["status"] = await sub.status()
                    out["peers"] = await sub.peers(wait_min=1)
                    await sub.subscribe(["t", "bin"])
                    async with open_client(a.config.socket_path) as pub:
                        numbers = [await pub.publish("t", str(k)) for k in range(n)]
                        out["numbers"] = numbers
                        await pub.flush()
                        assert pub.unacknowledged == 0
                        out["msg_id"] = await pub.publish("bin", b"\xff\x00", wait=True)
                        with pytest.raises(ApiReplyError, match="bad_request"):
                            await pub.publish("", "no topic", wait=True)
                    out["data"] = [(await sub.next_event())["data"] for _ in range(n)]
                    out["bin"] = await sub.next_event()
                return out

            out = await in_asyncio(app)
            assert out["status"]["name"] == "b"
            assert [p["name"] for p in out["peers"]] == ["a"]
            assert out["numbers"] == list(range(1, n + 1))
            assert out["data"] == [str(k) for k in range(n)]
            assert out["bin"]["msg_id"] == out["msg_id"]
            assert out["bin"]["data_b64"] == "/wA="


async def test_asyncio_refusals_in_a_pipeline_and_close_in_flight(short_tmp: Path) -> None:
    n = 3000
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):

            async def app() -> tuple[list[tuple[int, str]], list[str], int]:
                refused: list[tuple[int, str]] = []
                async with open_client(b.config.socket_path) as sub:
                    await sub.subscribe(["t"])
                    pub = await open_client(a.config.socket_path, window=1000)  # n > window
                    async with pub:
                        bad = 0
                        for k in range(n):
                            if k == n // 2:
                                bad = await pub.publish("$x", "reserved")
                            while True:
                                try:
                                    await pub.publish("t", str(k))
                                    break
                                except PublishError as err:
                                    refused += [(r.seq, r.topic) for r in err.refusals]
                        assert bad
                        in_flight = pub.unacknowledged
                        # leaving the block waits for the replies
                    got = [(await sub.next_event())["data"] for _ in range(n)]
                return refused, got, in_flight

            refused, got, in_flight = await in_asyncio(app)
            assert got == [str(k) for k in range(n)]
            assert refused == [(n // 2 + 1, "$x")]
            assert in_flight > 0


async def test_asyncio_publisher_that_never_waits_learns_of_a_refusal(short_tmp: Path) -> None:
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):

            async def app() -> tuple[int, PublishError, int]:
                async with open_client(a.config.socket_path) as client:
                    bad = await client.publish("$x", "reserved")
                    while True:
                        try:
                            await client.publish("t", "more")
                        except PublishError as err:
                            return bad, err, client.unacknowledged
                        await asyncio.sleep(0)

            bad, err, unacked = await in_asyncio(app)
            assert (err.seq, err.topic) == (bad, "$x")
            assert unacked < 1000  # not the window's doing


async def test_asyncio_close_raises_a_refusal_not_yet_seen(short_tmp: Path) -> None:
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):

            async def app() -> PublishError:
                client = await open_client(a.config.socket_path)
                await client.publish("t", "fine")
                await client.publish("$x", "reserved")
                with pytest.raises(PublishError) as info:
                    await client.__aexit__(None, None, None)  # as leaving ``async with``
                with pytest.raises(ConnectionClosed):
                    await client.publish("t", "after close")
                return info.value

            err = await in_asyncio(app)
            assert (err.seq, err.topic) == (2, "$x")


async def test_asyncio_window_holds_publish(short_tmp: Path) -> None:
    cfg_a = loopback_config(short_tmp, "a")
    with trio.fail_after(20):
        async with running_nodes([cfg_a]) as (a,):
            assert a.listen_addr is not None
            link = trio.Event()
            token = trio.lowlevel.current_trio_token()

            async def app() -> tuple[bool, int, dict[str, Any]]:
                async with open_client(cfg_a.socket_path, window=4) as client:
                    await client.send(peers_request(wait_min=1, timeout=20))
                    for k in range(3):
                        await client.publish("t", str(k))
                    fourth = asyncio.ensure_future(client.publish("t", "3"))
                    done, _ = await asyncio.wait([fourth], timeout=0.2)
                    blocked = not done
                    unacked = client.unacknowledged
                    token.run_sync_soon(link.set)  # trio side: link a peer to the node
                    await fourth
                    return blocked, unacked, await client.reply()

            async with trio.open_nursery() as nursery:

                async def link_b() -> None:
                    await link.wait()
                    cfg_b = loopback_config(short_tmp, "b",
                                            peers=(("127.0.0.1", a.listen_addr[1]),))
                    async with running_nodes([cfg_b]):
                        await trio.sleep_forever()

                nursery.start_soon(link_b)
                blocked, unacked, reply = await in_asyncio(app)
                nursery.cancel_scope.cancel()
            assert blocked
            assert unacked == 4
            assert reply["ok"] is True
            assert a.status_info().messages.published == 4


@needs_root
@needs_nobody_python
def test_asyncio_client_checks_who_serves_the_socket(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before it sends anything: another user's server is refused unless trusted."""
    os.chmod(short_tmp, 0o777)  # nobody may make its socket here
    monkeypatch.delenv("P2PNODE_SERVER_USER", raising=False)
    path = short_tmp / "other.sock"

    def drop() -> None:
        os.setgid(65534)
        os.setuid(65534)

    async def status(server_user: str | None) -> str:
        async with asyncio.timeout(10), open_client(path, server_user=server_user) as client:
            return str((await client.status())["name"])

    with subprocess.Popen([PYTHON_FOR_NOBODY, "-c", SERVE_AS_NOBODY, str(short_tmp)],
                          preexec_fn=drop, stdout=subprocess.PIPE, text=True,
                          cwd="/") as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            with pytest.raises(UntrustedServer, match="nothing was sent") as info:
                asyncio.run(status(None))
            assert info.value.uid == 65534
            assert asyncio.run(status(NOBODY)) == "not-your-node"
        finally:
            server.kill()
