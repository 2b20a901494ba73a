"""The link-list announcer (``node.announcer.MeshAnnouncer``): what it publishes."""

from __future__ import annotations

import trio

from p2pnode.mesh.linklist import MESH_TOPIC, decode_link_list
from p2pnode.mesh.view import MeshView
from p2pnode.node.announcer import MeshAnnouncer
from p2pnode.testing import memory_config
from p2pnode.wire.messages import Item

ME, PEER = b"\x01" * 16, b"\x02" * 16


def announcer(links: list[bytes], sent: list[Item]) -> tuple[MeshAnnouncer, MeshView]:
    view = MeshView(100, 90.0)
    ids = iter(range(1, 1000))
    cfg = memory_config(0, mesh_interval=30.0, mesh_min_interval=0.5)
    ann = MeshAnnouncer(view, ME, cfg, links=lambda: list(links),
                        listen=lambda: "mem:1", send=sent.append,
                        new_id=lambda: next(ids).to_bytes(16, "big"))
    return ann, view


async def test_a_list_without_links_is_kept_in_the_view_but_not_published() -> None:
    links: list[bytes] = []
    sent: list[Item] = []
    ann, view = announcer(links, sent)
    ann.announce()  # a node that starts: no links yet
    assert sent == []
    assert ann.sent == 0
    assert view.nodes[ME].links == frozenset()
    links.append(PEER)  # the first link opens
    ann.announce()
    assert [item.topic for item in sent] == [MESH_TOPIC]
    assert ann.sent == 1
    assert decode_link_list(sent[0].data).links == [PEER]
    links.clear()  # every link lost: nobody to tell; the next link's list follows
    ann.announce()
    assert len(sent) == 1
    assert view.nodes[ME].links == frozenset()


async def test_a_starting_node_publishes_its_list_once_its_links_open(
        autojump_clock: trio.abc.Clock) -> None:
    links: list[bytes] = []
    sent: list[Item] = []
    ann, _ = announcer(links, sent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ann.run)
        await trio.sleep(0.01)
        links.append(PEER)
        ann.links_changed()
        await trio.sleep(ann.min_interval)
        nursery.cancel_scope.cancel()
    assert [decode_link_list(item.data).links for item in sent] == [[PEER]]
