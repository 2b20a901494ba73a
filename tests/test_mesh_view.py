"""The mesh view: nodes share their link lists, and any node can show the whole mesh
(``p2pnode mesh``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.ids import id_to_hex
from p2pnode.mesh.draw import to_dot
from p2pnode.mesh.linklist import MESH_TOPIC, encode_link_list
from p2pnode.mesh.view import MeshView
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    random_connected_edges,
    start_memory_mesh,
    wait_until,
)

from .conftest import loopback_config, running_nodes

P2PNODE = [sys.executable, "-m", "p2pnode.cli"]


def real_links(nodes: list[Node]) -> set[tuple[str, str]]:
    out = set()
    for node in nodes:
        assert node.links is not None
        for peer in node.links.links:
            a, b = sorted((node.node_hex, id_to_hex(peer)))
            out.add((a, b))
    return out


def view_links(view: dict[str, object]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in view["links"]}  # type: ignore[attr-defined,misc]


def complete(nodes: list[Node]) -> bool:
    want = real_links(nodes)
    return all(len(n.mesh.nodes) == len(nodes) and view_links(n.mesh_info()) == want
               for n in nodes)


async def test_every_node_sees_the_whole_mesh_and_follows_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    edges = random_connected_edges(10, 3, seed=4)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, edges, 10, network=net, mesh_interval=30.0,
                                            mesh_min_interval=1.0)
            await wait_until(lambda: complete(nodes))
            info = nodes[3].mesh_info()
            assert {n["name"] for n in info["nodes"]} == {f"n{i}" for i in range(10)}
            assert info["self"] == nodes[3].node_hex
            assert nodes[3].status_info().mesh_view.nodes == 10
            # Link lists are not messages for apps.
            assert nodes[3].delivered == 0
            # A node that leaves disappears from the others' links soon after.
            await nodes[9].stop()
            await wait_until(lambda: all(
                view_links(n.mesh_info()) == real_links(nodes[:9]) for n in nodes[:9]))
            # ... and from the view, three intervals after it was last heard of.
            await trio.sleep(95)
            assert all(len(n.mesh_info()["nodes"]) == 9 for n in nodes[:9])
            assert all(nodes[9].node_id not in n.mesh.nodes for n in nodes[:9])
            nursery.cancel_scope.cancel()


def test_mesh_view_bounds_and_bad_lists() -> None:
    view = MeshView(max_nodes=3, max_age=10.0)
    for i in range(5):
        view.set(bytes([i]) * 16, f"n{i}", "", [bytes([i + 1]) * 16], float(i))
    assert len(view.nodes) == 3  # the oldest went first
    assert bytes([0]) * 16 not in view.nodes
    assert view.update(b"\x09" * 16, b"\x91\xc0", 5.0) is False
    assert view.update(b"\x09" * 16, encode_link_list("x", "h:1", [b"\x01" * 16], 1), 5.0)
    assert view.bad == 1
    view.expire(13.5)
    assert set(view.nodes) == {b"\x04" * 16, b"\x09" * 16}
    dot = to_dot(view.to_dict(15.0, b"\x09" * 16))
    assert dot.startswith("graph mesh {")
    assert '"09090909090909090909090909090909" [label="x", style=bold];' in dot
    assert dot.count(" -- ") == 2


async def test_apps_cannot_use_the_reserved_topic(short_tmp: Path) -> None:
    from p2pnode.client import ApiReplyError, open_client

    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]):
            client = await open_client(short_tmp / "a.sock")
            async with client:
                for request in ({"op": "publish", "topic": MESH_TOPIC, "data": "x"},
                                {"op": "subscribe", "topics": ["$anything"]}):
                    with pytest.raises(ApiReplyError) as info:
                        await client.request(request)
                    assert info.value.code == "bad_request"
                    assert "reserved" in str(info.value)


async def test_p2pnode_mesh_on_a_ten_node_mesh(short_tmp: Path) -> None:
    edges = random_connected_edges(10, 3, seed=2)
    configs = []
    for i in range(10):
        configs.append(loopback_config(
            short_tmp, f"m{i}", insecure=True, mesh_min_interval=0.2, mesh_interval=30.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes: list[Node] = []
            for i, cfg in enumerate(configs):
                peers = tuple(("127.0.0.1", nodes[a].listen_addr[1])  # type: ignore[index]
                              for a, b in edges if b == i)
                node = Node(dataclasses.replace(cfg, peers=peers))
                await nursery.start(node.run)
                nodes.append(node)
            while not complete(nodes):  # noqa: ASYNC110 - real sockets, bounded by fail_after
                await trio.sleep(0.05)
            sock = str(short_tmp / "m5.sock")
            out = await trio.run_process([*P2PNODE, "mesh", "--json", "--socket", sock],
                                         capture_stdout=True)
            view = json.loads(out.stdout)
            assert len(view["nodes"]) == 10
            assert view_links(view) == real_links(nodes)
            assert view_links(view) == {tuple(sorted((nodes[a].node_hex, nodes[b].node_hex)))
                                        for a, b in edges}
            text = await trio.run_process([*P2PNODE, "mesh", "--socket", sock],
                                          capture_stdout=True)
            table = text.stdout.decode()
            assert f"10 nodes, {len(edges)} links:" in table
            assert "m5 (this node)" in table
            assert all(f"m{i}" in table for i in range(10))
            dot = await trio.run_process([*P2PNODE, "mesh", "--dot", "--socket", sock],
                                         capture_stdout=True)
            assert dot.stdout.decode().count(" -- ") == len(edges)
            png = short_tmp / "mesh.png"
            await trio.run_process([*P2PNODE, "mesh", "--png", str(png), "--socket", sock],
                                   stderr=subprocess.DEVNULL)
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert png.stat().st_size > 5000
            nursery.cancel_scope.cancel()
