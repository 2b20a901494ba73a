"""The app surface of the member list across real nodes (loopback TCP, real sockets):
a watching connection and an event handler of node a learn of b joining, changing its
tags and leaving; ``members`` on a lists b with its tags.

Needs the member table spread between nodes (issue 18's records and gossip); on a
tree where the membership service knows only its own node, it is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pnode.members import Membership
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes
from .test_api_server import LineConn
from .test_member_handlers import recorder, runs

pytestmark = pytest.mark.skipif(
    not hasattr(Membership, "receive"),
    reason="the membership service knows only this node here (no member gossip yet)")


async def next_about(conn: LineConn, node: Node, kind: str) -> dict[str, object]:
    """The next member event ``kind`` about ``node`` (others skipped)."""
    while True:
        line = await conn.line()
        member = line.get("member")
        if line.get("event") == kind and isinstance(member, dict) \
                and member["node_id"] == node.node_hex:
            return member


async def test_a_watcher_and_a_handler_follow_another_member(short_tmp: Path) -> None:
    path, out = recorder(short_tmp)
    config_a = loopback_config(short_tmp, "a", tags=(("role", "display"),),
                               event_handlers=(("member_*", path),))
    with trio.fail_after(30):
        async with running_nodes([config_a]) as (a,):
            assert a.listen_addr is not None
            watcher = await LineConn.open(a)
            try:
                await watcher.ask({"op": "members", "watch": True})
                config_b = loopback_config(short_tmp, "b", tags=(("role", "speaker"),),
                                           peers=(("127.0.0.1", a.listen_addr[1]),))
                async with running_nodes([config_b]) as (b,):
                    joined = await next_about(watcher, b, "member_join")
                    assert joined["tags"] == {"role": "speaker"}
                    listed = await LineConn.open(a)
                    reply = await listed.ask({"op": "members", "tag": {"role": "speaker"}})
                    await listed.stream.aclose()
                    assert [m["name"] for m in reply["members"]] == ["b"]
                    changer = await LineConn.open(b)
                    await changer.ask({"op": "tags", "set": {"room": "2"}})
                    await changer.stream.aclose()
                    updated = await next_about(watcher, b, "member_update")
                    assert updated["tags"] == {"role": "speaker", "room": "2"}
                    await b.stop(grace=1.0)
                left = await next_about(watcher, b, "member_left")
                assert left["state"] == "left"
            finally:
                await watcher.stream.aclose()
            await a.handlers.wait_idle()
    seen = [(env["P2PNODE_EVENT"], env["P2PNODE_MEMBER_NAME"]) for env, _ in runs(out)]
    assert ("member_join", "b") in seen
    assert ("member_update", "b") in seen
    assert ("member_left", "b") in seen
