"""The trio and blocking clients against real nodes: pipelined publishes, replies
matched to them (refusals in the middle of a pipeline named), flush, the window's
backpressure, and a close with messages in flight."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.client import (
    ApiReplyError,
    BlockingClient,
    Client,
    PublishError,
    Refusal,
    open_client,
    peers_request,
)
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes

OVERSIZE = "x" * (512 * 1024 + 1)  # one byte over the node's max_payload: too_large


@asynccontextmanager
async def two_nodes(tmp: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes a and b, b linked to a."""
    async with running_nodes([loopback_config(tmp, "a")]) as (a,):
        assert a.listen_addr is not None
        peer = ("127.0.0.1", a.listen_addr[1])
        async with running_nodes([loopback_config(tmp, "b", peers=(peer,))]) as (b,):
            await b.wait_peer_count(1, 1)
            yield a, b


async def received(sub: Client, n: int) -> list[str]:
    return [str((await sub.next_event())["data"]) for _ in range(n)]


async def test_a_refusal_in_the_middle_of_a_pipeline_names_its_message(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            async with open_client(b.config.socket_path) as sub, \
                    open_client(a.config.socket_path) as pub:
                await sub.subscribe(["t"])
                refusals: list[Refusal] = []

                async def publish(topic: str, data: str) -> int:
                    while True:  # a call that raises did not queue its own message
                        try:
                            return await pub.publish(topic, data)
                        except PublishError as err:
                            refusals.extend(err.refusals)

                numbers = [await publish("t", f"good {k}") for k in range(10)]
                bad = await publish("$x", "reserved topic")
                numbers += [await publish("t", f"good {k}") for k in range(10, 20)]
                too_big = await publish("t", OVERSIZE)
                numbers += [await publish("t", f"good {k}") for k in range(20, 30)]
                assert numbers == [*range(1, 11), *range(12, 22), *range(23, 33)]
                assert too_big == bad + 11
                try:
                    await pub.flush()
                except PublishError as err:
                    refusals.extend(err.refusals)
                assert [(r.seq, r.topic, r.code) for r in refusals] == [
                    (bad, "$x", "bad_request"), (too_big, "t", "too_large")]
                await pub.flush()  # each refusal is reported once
                assert pub.unacknowledged == 0
                assert await received(sub, 30) == [f"good {k}" for k in range(30)]
                assert a.status_info().messages.published == 30


async def test_a_refusal_is_raised_by_the_next_call(short_tmp: Path) -> None:
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,), \
                open_client(a.config.socket_path) as client:
            first = await client.publish("t", "fine")
            bad = await client.publish("", "no topic")
            # A request after it: its reply comes after the refusal's, so the refusal
            # is known once status() returns; the next call raises it.
            assert (await client.status())["name"] == "a"
            with pytest.raises(PublishError) as info:
                await client.publish("t", "next")
            assert info.value.seq == bad == first + 1
            # publish(wait=True) answers for itself
            msg_id = await client.publish("t", "waited", wait=True)
            assert len(msg_id) == 32
            with pytest.raises(ApiReplyError, match="bad_request") as refused:
                await client.publish("$x", "reserved", wait=True)
            assert not isinstance(refused.value, PublishError)


async def test_a_publisher_that_never_waits_learns_of_a_refusal(short_tmp: Path) -> None:
    """Nothing waits for a reply here (no flush, the window never fills): the client
    reads the replies by itself, and a later publish raises the refusal."""
    cfg = loopback_config(short_tmp, "a")
    with trio.fail_after(10):
        async with running_nodes([cfg]) as (a,), open_client(cfg.socket_path) as client:
            bad = await client.publish("$x", "reserved")
            while True:
                try:
                    await client.publish("t", "more")
                except PublishError as err:
                    refusal = err
                    break
                await trio.lowlevel.checkpoint()  # the node runs here too
            assert client.unacknowledged < 1000  # not the window's doing
            assert (refusal.seq, refusal.topic) == (bad, "$x")
            await client.flush()
            assert a.status_info().api.errors == 1


async def test_the_window_bounds_requests_in_flight(short_tmp: Path) -> None:
    """A ``peers`` request that waits holds the node's answers on that connection: the
    client sends ``window`` requests, then ``publish`` waits, until the node answers."""
    cfg_a = loopback_config(short_tmp, "a")
    with trio.fail_after(20):
        async with running_nodes([cfg_a]) as (a,), \
                open_client(cfg_a.socket_path, window=8) as client:
            await client.send(peers_request(wait_min=1, timeout=20))
            for k in range(7):
                await client.publish("t", f"m{k}")
            assert client.unacknowledged == 8
            done = trio.Event()

            async def ninth() -> None:
                await client.publish("t", "m7")
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ninth)
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set()  # blocked by the window, not by anything else
                assert client.unacknowledged == 8
                assert a.status_info().api.requests <= 8
                assert a.listen_addr is not None
                cfg_b = loopback_config(short_tmp, "b", peers=(("127.0.0.1", a.listen_addr[1]),))
                async with running_nodes([cfg_b]):
                    await done.wait()
                    assert (await client.reply())["ok"] is True  # the peers reply
                    await client.flush()
            assert a.status_info().messages.published == 8


async def test_closing_with_messages_in_flight_loses_nothing(short_tmp: Path) -> None:
    n = 3000
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):
            async with open_client(b.config.socket_path) as sub:
                await sub.subscribe(["t"])
                async with open_client(a.config.socket_path) as pub:
                    for k in range(n):
                        await pub.publish("t", str(k))
                    assert pub.unacknowledged > 0  # closing has something to wait for
                assert pub.unacknowledged == 0
                assert await received(sub, n) == [str(k) for k in range(n)]


async def test_blocking_client_pipelines_and_closes_cleanly(short_tmp: Path) -> None:
    n = 2999  # the last publish goes quiet (one in 250 asks for a reply): unconfirmed until close
    with trio.fail_after(30):
        async with two_nodes(short_tmp) as (a, b):
            async with open_client(b.config.socket_path) as sub:
                await sub.subscribe(["t"])
                in_flight = []

                def publish_all() -> tuple[int, int]:
                    with BlockingClient(a.config.socket_path, timeout=10) as pub:
                        first = pub.publish("t", "first")
                        bad = pub.publish("$x", "reserved")
                        with pytest.raises(PublishError) as info:
                            pub.flush()
                        assert (info.value.seq, info.value.topic) == (bad, "$x")
                        for k in range(n):
                            pub.publish("t", str(k))
                        in_flight.append(pub.unacknowledged)
                    return first, pub.unacknowledged

                first, left = await trio.to_thread.run_sync(publish_all)
                assert first == 1
                assert left == 0
                assert in_flight[0] > 0
                got = await received(sub, n + 1)
                assert got == ["first", *(str(k) for k in range(n))]


async def test_blocking_publish_blocks_on_a_full_window(short_tmp: Path) -> None:
    """With the node holding its answers, the request past the window waits for them:
    here until the client's ``timeout``. Once the node answers, publishing goes on."""
    cfg_a = loopback_config(short_tmp, "a")
    with trio.fail_after(20):
        async with running_nodes([cfg_a]) as (a,):
            client = BlockingClient(cfg_a.socket_path, timeout=0.3, window=4)
            try:
                client.send(peers_request(wait_min=1, timeout=20))
                for k in range(3):
                    client.publish("t", f"m{k}")
                with pytest.raises(TimeoutError):
                    await trio.to_thread.run_sync(client.publish, "t", "m3")
                assert client.unacknowledged == 4
                assert a.listen_addr is not None
                cfg_b = loopback_config(short_tmp, "b", peers=(("127.0.0.1", a.listen_addr[1]),))
                async with running_nodes([cfg_b]):
                    client.timeout = 10
                    await trio.to_thread.run_sync(client.publish, "t", "m3")
                    assert (await trio.to_thread.run_sync(client.reply))["ok"] is True
                    await trio.to_thread.run_sync(client.close)
            finally:
                client.sock.close()
            assert a.status_info().messages.published == 4


async def test_a_trio_client_without_async_with_still_works(short_tmp: Path) -> None:
    """``client = await open_client()`` (no tasks of its own): writes at once, reads
    when a call needs it."""
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            client = await open_client(a.config.socket_path)
            try:
                await client.subscribe(["t"])
                for k in range(100):
                    await client.publish("t", str(k))
                await client.flush()
                assert [str((await client.next_event())["data"]) for _ in range(100)] == [
                    str(k) for k in range(100)]
            finally:
                await client.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await client.publish("t", "after close")


async def test_two_tasks_share_one_client(short_tmp: Path) -> None:
    """Inside ``async with`` one task can read events while another asks for status."""
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,), \
                open_client(a.config.socket_path) as client:
            await client.subscribe(["t"])
            got: list[str] = []

            async def listen() -> None:
                while len(got) < 50:
                    got.append(str((await client.next_event())["data"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                for k in range(50):
                    await client.publish("t", str(k))
                    if k % 10 == 0:
                        assert (await client.status())["name"] == "a"
            assert got == [str(k) for k in range(50)]


def test_blocking_events_end_when_the_node_goes(short_tmp: Path) -> None:
    """``events()`` of the blocking client ends with the connection (a node that stops)."""
    stop = threading.Event()
    ready = threading.Event()
    cfg = loopback_config(short_tmp, "a")

    async def node() -> None:
        with trio.fail_after(20):
            async with running_nodes([cfg]):
                ready.set()
                await trio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=trio.run, args=(node,))
    thread.start()
    try:
        assert ready.wait(20)
        with BlockingClient(cfg.socket_path, timeout=20) as client:
            client.subscribe(["t"])
            client.publish("t", "one")
            client.flush()  # confirmed: the node's abrupt end below loses nothing of ours
            events = client.events()
            assert next(events)["data"] == "one"
            stop.set()
            assert list(events) == []
    finally:
        stop.set()
        thread.join(30)
