"""Retained messages and last wills through the three shipped clients: ``publish(...,
retain=True)`` pipelined or waited for, ``set_will``/``clear_will``, subscribe without
the retained messages, and ``bye`` on a normal close (so the node publishes no will),
none when an exception leaves the block (then it does). The shared core first, without
I/O."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import trio

from p2pnode.client import BlockingClient, PublishError, open_client, will_request
from p2pnode.client.aio import open_client as open_asyncio_client
from p2pnode.client.protocol import ClientProtocol, encode_publish, subscribe_request

from .conftest import loopback_config, running_nodes
from .test_client_protocol import sent_lines
from .test_wills import Watcher


def test_retained_publishes_and_wills_encode() -> None:
    assert json.loads(encode_publish("t", "v", retain=True)) == {
        "op": "publish", "topic": "t", "data": "v", "retain": True}
    proto = ClientProtocol(window=8)
    proto.publish("t", "v", retain=True)  # quiet
    proto.publish("t", "w", retain=True)  # the one that asks for a reply (window // 4)
    assert sent_lines(proto) == [
        {"op": "publish", "topic": "t", "data": "v", "retain": True, "ack": False},
        {"op": "publish", "topic": "t", "data": "w", "retain": True}]
    assert will_request("s", b"\xff", retain=True) == {
        "op": "will", "topic": "s", "data_b64": "/w==", "retain": True}
    assert will_request() == {"op": "will"}
    assert subscribe_request(["t"], None, retained=False) == {
        "op": "subscribe", "topics": ["t"], "retained": False}
    assert subscribe_request(["t"], None) == {"op": "subscribe", "topics": ["t"]}


def test_a_normal_close_says_bye_after_everything_else() -> None:
    proto = ClientProtocol()
    proto.publish("t", "v")
    assert proto.close_target() == 2
    assert sent_lines(proto)[-1] == {"op": "bye"}
    proto.feed(b'{"ok":true}\n')  # the bye's reply confirms the quiet publish before it
    assert (proto.acked, proto.unacked) == (2, 0)


async def test_the_three_clients_retain_and_leave_wills_only_when_they_fail(
        short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,), \
                open_client(a.config.socket_path) as watching:
            await watching.subscribe(["trio", "asyncio", "blocking"], retained=False)
            watcher = Watcher(watching)
            path = a.config.socket_path

            async with open_client(path) as node:
                await node.set_will("trio", "will")
                await node.publish("trio", "1", retain=True)
                assert len(await node.publish("trio", "2", retain=True, wait=True)) == 32

            async def failing_app() -> None:
                async with open_client(path) as node:
                    await node.set_will("trio", "will after an exception")
                    raise RuntimeError("the app fails")

            with pytest.raises(RuntimeError, match="the app fails"):
                await failing_app()

            async def in_asyncio() -> None:
                async with open_asyncio_client(path) as node:
                    await node.set_will("asyncio", "will")
                    await node.publish("asyncio", "1", retain=True)
                async with open_asyncio_client(path) as node:
                    await node.set_will("asyncio", "will")
                    await node.clear_will()
                    node._transport.abort()  # type: ignore[union-attr]  # as a crash

            await trio.to_thread.run_sync(asyncio.run, in_asyncio())

            def blocking() -> None:
                with BlockingClient(path, timeout=5) as node:
                    node.set_will("blocking", "will")
                    node.publish("blocking", "1", retain=True)
                    node.flush()
                with BlockingClient(path, timeout=5) as node:
                    node.publish("blocking", "2", to="ab" * 16, retain=True)  # refused
                    with pytest.raises(PublishError, match="goes to everyone"):
                        node.flush()

            await trio.to_thread.run_sync(blocking)
            a.publish("trio", b"end")
            a.publish("asyncio", b"end")
            a.publish("blocking", b"end")
            assert [await watcher.next_on("trio") for _ in range(4)] == [
                "1", "2", "will after an exception", "end"]
            assert [await watcher.next_on("asyncio") for _ in range(2)] == ["1", "end"]
            assert [await watcher.next_on("blocking") for _ in range(2)] == ["1", "end"]
            reply = await watching.subscribe(["trio", "asyncio", "blocking"])
            assert reply["retained"] == 3
            retained = {(e := await watching.next_event())["topic"]: e["data"]
                        for _ in range(3)}
            assert retained == {"trio": "2", "asyncio": "1", "blocking": "1"}
