"""Real nodes over loopback TCP, with apps on real Unix sockets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from p2pnode import PROTOCOL_VERSION
from p2pnode.client import Client, open_client
from p2pnode.node import Node
from p2pnode.testing import (
    line_edges,
    random_connected_edges,
    ring_edges,
    wait_linked,
)
from p2pnode.wire.messages import Hello, encode_message

from .conftest import loopback_config, running_nodes


async def collect(client: Client, count: int, into: list[dict[str, object]]) -> None:
    while len(into) < count:
        into.append(await client.next_event())


@pytest.mark.parametrize(
    ("n", "edges"),
    [
        (2, line_edges(2)),
        (5, line_edges(5)),
        (5, ring_edges(5)),
        (12, random_connected_edges(12, 4, seed=12)),
    ],
    ids=["pair", "line5", "ring5", "random12"],
)
async def test_apps_get_every_message_once(
    short_tmp: Path, n: int, edges: list[tuple[int, int]]
) -> None:
    with trio.fail_after(30):
        configs = [loopback_config(short_tmp, f"n{i}") for i in range(n)]
        async with running_nodes(configs) as nodes:
            # Link the mesh: node a dials node b for each edge, over real TCP.
            async with trio.open_nursery() as dialers:
                for a, b in edges:
                    host, port = nodes[b].listen_addr  # type: ignore[misc]
                    assert nodes[a].links is not None
                    dialers.start_soon(nodes[a].links.keep_dialling, host, port)
                await wait_linked(nodes, edges)
                clients = [await open_client(node.config.socket_path) for node in nodes]
                for client in clients:
                    await client.subscribe(["t"])
                per_node = 3
                sent = set()
                for i, client in enumerate(clients):
                    for k in range(per_node):
                        sent.add(await client.publish("t", f"n{i}-{k}", wait=True))
                got: list[list[dict[str, object]]] = [[] for _ in clients]
                async with trio.open_nursery() as readers:
                    for client, into in zip(clients, got, strict=True):
                        readers.start_soon(collect, client, len(sent), into)
                for i, events in enumerate(got):
                    ids = [e["msg_id"] for e in events]
                    assert len(ids) == len(set(ids)) == len(sent), f"node {i}"
                    assert set(ids) == sent
                # Nothing more arrives: every node saw each message once, the rest
                # were counted as duplicates.
                for node in nodes:
                    assert node.delivered == len(sent)
                for client in clients:
                    await client.aclose()
                dialers.cancel_scope.cancel()



async def raw_connect(node: Node) -> trio.SocketStream:
    host, port = node.listen_addr  # type: ignore[misc]
    return await trio.open_tcp_stream(host, port)


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def assert_link_works(a: Node, b: Node) -> None:
    async with await open_client(b.config.socket_path) as sub:
        await sub.subscribe(["check"])
        async with await open_client(a.config.socket_path) as pub:
            msg_id = await pub.publish("check", "still alive", wait=True)
        event = await sub.next_event()
        assert event["msg_id"] == msg_id


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # garbage before the handshake
        b"\xff\xff\xff\xff" + b"x" * 100,  # a frame far over the size limit
        encode_message(Hello(PROTOCOL_VERSION, b"\x00" * 16, "x", "", network="open"))
        + b"\x00\x00\x00\x02\xc1\xc1",
    ],
    ids=["garbage", "oversize", "garbage-after-hello"],
)
@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "plaintext"])
async def test_bad_tcp_input_closes_only_that_connection(
    short_tmp: Path, payload: bytes, insecure: bool
) -> None:
    """Garbage reaches the TLS layer (tls) or the link protocol itself (plaintext)."""
    with trio.fail_after(20):
        configs = [loopback_config(short_tmp, "a", insecure=insecure),
                   loopback_config(short_tmp, "b", insecure=insecure)]
        async with running_nodes(configs) as (a, b):
            assert a.links is not None
            async with trio.open_nursery() as nursery:
                host, port = b.listen_addr  # type: ignore[misc]
                nursery.start_soon(a.links.keep_dialling, host, port)
                await wait_linked([a, b], [(0, 1)])
                stream = await raw_connect(a)
                await stream.send_all(payload)
                await read_to_eof(stream)  # the node closed it
                await stream.aclose()
                assert len(a.links.links) == 1
                await assert_link_works(a, b)
                await assert_link_works(b, a)
                nursery.cancel_scope.cancel()


async def test_oversize_frame_on_open_link_closes_only_that_link(short_tmp: Path) -> None:
    """A linked peer that sends a frame over the limit loses its link; others keep theirs."""
    with trio.fail_after(20):
        configs = [loopback_config(short_tmp, n) for n in ("a", "b", "c")]
        async with running_nodes(configs) as (a, b, c):
            assert a.links is not None
            assert c.links is not None
            async with trio.open_nursery() as nursery:
                for dialer in (a, c):
                    host, port = b.listen_addr  # type: ignore[misc]
                    nursery.start_soon(dialer.links.keep_dialling, host, port)  # type: ignore[union-attr]
                await wait_linked([a, b, c], [(0, 1), (2, 1)])
                assert b.links is not None
                link = b.links.links[a.node_id]
                big = b"\x00" * (b.config.max_frame + 1)
                # Send from a's side through its own queue: a's link to b carries it.
                a.links.links[b.node_id].out.put_force(len(big).to_bytes(4, "big") + big)
                await link.closed.wait()
                assert link.close_reason == "too_large"
                await assert_link_works(c, b)
                # a redials b by itself and the link comes back.
                await wait_linked([a, b, c], [(0, 1)])
                await assert_link_works(a, c)
                nursery.cancel_scope.cancel()


async def test_identity_persists_and_data_dir_is_locked(short_tmp: Path) -> None:
    cfg = loopback_config(short_tmp, "a")
    with trio.fail_after(10):
        async with running_nodes([cfg]) as (first,):
            first_id = first.node_id
            other = dataclasses.replace(cfg, socket_path=short_tmp / "other.sock")
            from p2pnode.errors import ConfigError

            with pytest.raises(ConfigError, match="in use by another node"):
                await Node(other).run()
        async with running_nodes([cfg]) as (again,):
            assert again.node_id == first_id
