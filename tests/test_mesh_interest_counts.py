"""``p2pnode mesh`` per node in interest mode (docs/cli.md#mesh, docs/api.md#mesh): each
node's link list says how many routed batches it received for its own subscriptions
(``wanted``) and only to pass on (``relayed``), so any node shows them for every node.
Lists without them (other modes, older nodes) are still taken."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio
import trio.testing

from p2pnode.cli.commands import mesh_table
from p2pnode.mesh.linklist import LinkList, decode_link_list, encode_link_list
from p2pnode.mesh.view import MeshView
from p2pnode.testing import line_edges, wait_linked, wait_until

from .test_interest_mode_node import interest_line, knows_everything, subscribe

A, B = b"\x0a" * 16, b"\x0b" * 16


async def test_every_node_shows_what_each_node_received_for_itself_and_for_others(
    short_tmp: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with interest_line(short_tmp, 4) as nodes:
            await wait_linked(nodes, line_edges(4))
            subscribe(nodes[3], ["a"])
            await wait_until(lambda: knows_everything(nodes, {3: "a"}))
            for k in range(5):
                nodes[0].publish("a", b"%d" % k)
                await trio.sleep(0.05)

            def counts(view: dict[str, object]) -> list[tuple[object, object]]:
                by_name = {n["name"]: n for n in view["nodes"]}  # type: ignore[attr-defined]
                return [(by_name[f"n{i}"]["wanted"], by_name[f"n{i}"]["relayed"])
                        for i in range(4)]

            want = [(0, 0), (0, 5), (0, 5), (5, 0)]
            await wait_until(lambda: counts(nodes[0].mesh_info()) == want)  # lists came
            assert all(counts(n.mesh_info()) == want for n in nodes)
            table = mesh_table(nodes[1].mesh_info()).splitlines()
            assert table[0].split()[-2:] == ["WANTED", "RELAYED"]
            n3 = next(line for line in table if " n3 " in line)
            assert n3.split()[-2:] == ["5", "0"]


def test_lists_without_counts_are_taken_and_shown_without_them() -> None:
    view = MeshView(max_nodes=10, max_age=90.0)
    old = msgspec.msgpack.encode(["old", "h:1", [B], 3])  # a list of before protocol 7
    assert view.update(A, old, 1.0)
    assert view.update(B, encode_link_list("new", "h:2", [A], 4, (7, 9)), 1.0)
    nodes = {n["name"]: n for n in view.to_dict(2.0, A)["nodes"]}
    assert (nodes["old"]["wanted"], nodes["old"]["relayed"]) == (None, None)
    assert (nodes["new"]["wanted"], nodes["new"]["relayed"]) == (7, 9)
    lines = mesh_table(view.to_dict(2.0, A)).splitlines()
    assert next(line for line in lines if " old " in line).split()[-2:] == ["-", "-"]
    # A list with counts decodes where they are not known (trailing fields are ignored).
    assert LinkList.__struct_fields__[:4] == _OldLinkList.__struct_fields__
    short = msgspec.msgpack.Decoder(type=_OldLinkList).decode(
        encode_link_list("new", "h:2", [A], 4, (7, 9)))
    assert short.stamp == 4
    # A count out of bounds makes the list bad, as any malformed list.
    assert not view.update(A, msgspec.msgpack.encode(["x", "h:1", [], 5, -1, 0]), 3.0)
    assert view.bad == 1
    assert decode_link_list(encode_link_list("t", "h", [], 1)).wanted is None
    without = view.to_dict(2.0, A)
    for n in without["nodes"]:
        n["wanted"] = n["relayed"] = None
    assert "WANTED" not in mesh_table(without).splitlines()[0]  # other modes: no columns


class _OldLinkList(msgspec.Struct, array_like=True):
    """``LinkList`` as protocol 6 had it."""

    name: str
    listen: str
    links: list[bytes]
    stamp: int = 0

