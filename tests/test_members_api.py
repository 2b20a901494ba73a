"""The member list in the API against a real node (loopback TCP, a real Unix socket):
``members`` (filters by tag and state, ``watch`` for member events, bounded like other
events), ``tags`` (set and delete, validated, rate-limited), the three clients'
``members``/``set_tags``, and every bad input answered with a clear error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api.members import TAG_CHANGES_PER_S
from p2pnode.api.protocol import parse_request
from p2pnode.client import ApiReplyError, BlockingClient, open_asyncio_client, open_client
from p2pnode.config.tags import MAX_TAGS_BYTES
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes
from .test_api_server import LineConn


@asynccontextmanager
async def connected(node: Node, n: int = 1) -> AsyncIterator[list[LineConn]]:
    """``n`` raw connections to ``node``'s API, closed at the end."""
    conns = [await LineConn.open(node) for _ in range(n)]
    try:
        yield conns
    finally:
        for conn in conns:
            await conn.stream.aclose()


@pytest.fixture
async def node(short_tmp: Path) -> Any:
    config = loopback_config(short_tmp, "a", tags=(("role", "display"), ("room", "1")))
    async with running_nodes([config]) as (n,):
        yield n


async def test_members_lists_this_node_with_its_tags(node: Node) -> None:
    with trio.fail_after(10):
        async with connected(node) as (conn,):
            reply = await conn.ask({"op": "members", "id": 1})
            assert reply["ok"]
            assert reply["id"] == 1
            (me,) = reply["members"]
            assert me["node_id"] == node.node_hex
            assert (me["name"], me["state"], me["self"]) == ("a", "alive", True)
            assert me["tags"] == {"role": "display", "room": "1"}
            assert me["addrs"] == [node.listen_str]
            assert me["since_s"] >= 0
            assert me["incarnation"] == node.membership.me.incarnation


@pytest.mark.parametrize(("request_", "found"), [
    ({"tag": {"role": "display"}}, 1),
    ({"tag": {"role": "display", "room": "1"}}, 1),
    ({"tag": {"role": "speaker"}}, 0),
    ({"tag": {"role": "display", "room": "2"}}, 0),
    ({"tag": {"floor": "1"}}, 0),
    ({"tag": {}}, 1),
    ({"state": "alive"}, 1),
    ({"state": ["dead", "alive"]}, 1),
    ({"state": ["dead", "left", "suspect"]}, 0),
    ({"state": [], "tag": {"role": "display"}}, 0),
])
async def test_members_filters_by_tag_and_state(node: Node, request_: dict[str, Any],
                                                found: int) -> None:
    with trio.fail_after(10):
        async with connected(node) as (conn,):
            reply = await conn.ask({"op": "members", **request_})
            assert reply["ok"], reply
            assert len(reply["members"]) == found


async def test_tags_set_and_delete_and_the_watchers_are_told(node: Node) -> None:
    with trio.fail_after(10):
        async with connected(node, 3) as (watcher, other, changer):
            assert (await watcher.ask({"op": "members", "watch": True}))["ok"]
            before = node.membership.me.incarnation
            reply = await changer.ask({"op": "tags", "id": "t", "set": {"floor": "2"},
                                       "delete": ["room"]})
            assert reply == {"id": "t", "ok": True, "tags": {"role": "display", "floor": "2"}}
            assert node.membership.me.incarnation == before + 1
            event = await watcher.line()
            assert event["event"] == "member_update"
            assert event["member"]["node_id"] == node.node_hex
            assert event["member"]["tags"] == {"role": "display", "floor": "2"}
            # The list shows the change; a connection that did not watch got no event.
            listed = await changer.ask({"op": "members", "tag": {"floor": "2"}})
            assert [m["tags"]["floor"] for m in listed["members"]] == ["2"]
            assert (await other.ask({"op": "sync", "id": 9})) == {"id": 9, "ok": True}
            # No change, no event: the tags are answered as they are.
            same = await changer.ask({"op": "tags", "set": {"floor": "2"}})
            assert same["tags"] == {"role": "display", "floor": "2"}
            assert (await changer.ask({"op": "tags"}))["tags"] == same["tags"]
            assert node.membership.me.incarnation == before + 1
            # watch false: no more events.
            assert (await watcher.ask({"op": "members", "watch": False, "id": 2}))["id"] == 2
            assert node.api is not None
            assert node.api._member_unlisten is None
            await changer.ask({"op": "tags", "delete": ["floor"]})
            assert await watcher.ask({"op": "sync", "id": 3}) == {"id": 3, "ok": True}


async def test_a_watcher_that_leaves_is_forgotten(node: Node) -> None:
    with trio.fail_after(10):
        api = node.api
        assert api is not None
        conn = await LineConn.open(node)
        await conn.ask({"op": "members", "watch": True})
        assert api._member_unlisten is not None
        assert len(api._member_watchers) == 1
        await conn.stream.aclose()
        while api.sessions:  # woken as the session ends
            api._sessions_changed = trio.Event()
            await api._sessions_changed.wait()
        assert api._member_watchers == set()
        assert api._member_unlisten is None
        node.membership.set_tags({"x": "1"})  # no listener left to fail


async def test_member_events_are_bounded_like_other_events(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a", client_queue_bytes=32 << 10)
    async with running_nodes([config]) as (node,):
        with trio.fail_after(20):
            async with connected(node) as (conn,):
                await conn.ask({"op": "members", "watch": True})
                lines = await events_beyond_the_queue(node, conn)
                assert node.api is not None
                dropped = sum(line["count"] for line in lines if line["event"] == "dropped")
                updates = [line for line in lines if line["event"] == "member_update"]
                assert dropped == node.api.stats.events_dropped > 0
                assert len(updates) + dropped == 3001
                assert len(updates) > 1


async def events_beyond_the_queue(node: Node, conn: LineConn) -> list[dict[str, Any]]:
    """3,000 member events faster than the queue takes them (no checkpoint between
    them), then one more once the queue is empty: the lines ``conn`` got."""
    for i in range(3000):
        node.membership.set_tags({"n": str(i)})
    await conn.send_raw(b'{"op":"sync","id":"end"}\n')
    lines = []
    while (line := await conn.line()).get("id") != "end":
        lines.append(line)
    # The next event that fits comes after the count of those dropped since the last
    # notice.
    node.membership.set_tags({"n": "last"})
    lines += [await conn.line(), await conn.line()]
    assert lines[-2]["event"] == "dropped"
    assert lines[-1]["member"]["tags"]["n"] == "last"
    return lines


BAD = [
    ({"op": "members", "state": "asleep"}, "state is one of alive, suspect, dead, left"),
    ({"op": "members", "state": ["alive"] * 5}, "state is one of"),
    ({"op": "members", "tag": {"bad key": "x"}}, "tag: tag key 'bad key': 1-64 characters"),
    ({"op": "members", "tag": {"k": "x" * 257}}, "the value is 257 characters, over 256"),
    ({"op": "members", "tag": {f"k{i}": "v" for i in range(33)}}, "tag: at most 32 tags"),
    ({"op": "members", "tag": {"k": 1}}, "Expected `str`, got `int`"),
    ({"op": "members", "watch": "yes"}, "Expected `bool | null`"),
    ({"op": "members", "sort": "name"}, "unknown field `sort`"),
    ({"op": "tags", "set": {"": "x"}}, "set: tag key '': 1-64 characters"),
    ({"op": "tags", "set": {"k" * 65: "x"}}, "1-64 characters"),
    ({"op": "tags", "set": {"é": "x"}}, "1-64 characters of A-Z"),
    ({"op": "tags", "set": {"k": "two\nlines"}}, "may not contain control characters"),
    ({"op": "tags", "set": {f"k{i}": "v" for i in range(33)}}, "set: at most 32 tags"),
    ({"op": "tags", "set": {f"k{i}": "v" for i in range(31)}},
     "this node's tags would be 33 tags, over the limit of 32"),
    ({"op": "tags", "set": {f"k{i}": "v" * 250 for i in range(9)}},
     f"over the limit of {MAX_TAGS_BYTES}"),
    ({"op": "tags", "delete": ["no way"]}, "delete: tag key 'no way'"),
    ({"op": "tags", "delete": [f"k{i}" for i in range(33)]}, "delete: at most 32 keys"),
    ({"op": "tags", "set": {"k": "1"}, "delete": ["k"]}, "tag k is both set and deleted"),
    ({"op": "tags", "set": ["k=v"]}, "Expected `object | null`, got `array`"),
]


@pytest.mark.parametrize(("request_", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
async def test_bad_member_requests_are_refused_clearly(node: Node, request_: dict[str, Any],
                                                       message: str) -> None:
    with trio.fail_after(10):
        async with connected(node) as (conn,):
            before = dict(node.membership.me.tags), node.membership.me.incarnation
            reply = await conn.ask({**request_, "id": 5})
            assert reply["ok"] is False
            assert reply["id"] == 5
            assert reply["error"]["code"] == "bad_request"
            assert message in reply["error"]["message"], reply
            assert (dict(node.membership.me.tags), node.membership.me.incarnation) == before


def test_the_ops_parse_as_documented() -> None:
    req = parse_request(b'{"op":"members","tag":{"role":"display"},"state":["alive"]}')
    assert type(req).__name__ == "MembersOp"
    req = parse_request(b'{"op":"tags","set":{"a":"1"},"delete":["b"]}')
    assert type(req).__name__ == "TagsOp"


async def test_tag_changes_are_rate_limited(node: Node) -> None:
    with trio.fail_after(10):
        async with connected(node) as (conn,):
            start = trio.current_time()
            lines = b"".join(json.dumps({"op": "tags", "set": {"n": str(i)}, "id": i}).encode()
                             + b"\n" for i in range(50))
            await conn.send_raw(lines)
            replies = [await conn.line() for _ in range(50)]
            elapsed = trio.current_time() - start
            taken = [r for r in replies if r["ok"]]
            refused = [r for r in replies if not r["ok"]]
            # A burst of twice the rate, then the rate.
            assert 2 * TAG_CHANGES_PER_S <= len(taken) <= 2 * TAG_CHANGES_PER_S + \
                TAG_CHANGES_PER_S * elapsed + 1
            assert refused
            assert {r["error"]["code"] for r in refused} == {"rate_limited"}
            assert node.membership.me.tags["n"] == taken[-1]["tags"]["n"]


async def test_the_three_clients(node: Node) -> None:
    path = node.config.socket_path
    with trio.fail_after(10):
        async with open_client(path) as client:
            assert (await client.set_tags({"k": "1"}, ["room"])) == {"role": "display",
                                                                     "k": "1"}
            (me,) = await client.members({"k": "1"}, "alive", watch=True)
            assert me["self"]
            assert me["tags"]["k"] == "1"
            assert await client.members(state=["dead"]) == []
            await client.set_tags(delete=["k"])
            event = await client.next_event()
            assert event["event"] == "member_update"
            assert "k" not in event["member"]["tags"]
            with pytest.raises(ApiReplyError) as info:
                await client.set_tags({"bad key": "1"})
            assert info.value.code == "bad_request"

        def blocking() -> tuple[list[dict[str, Any]], dict[str, str]]:
            with BlockingClient(path) as sync:
                return sync.members({"role": "display"}), sync.set_tags({"b": "2"})

        members, tags = await trio.to_thread.run_sync(blocking)
        assert [m["name"] for m in members] == ["a"]
        assert tags["b"] == "2"

        def asyncio_client() -> tuple[list[dict[str, Any]], dict[str, str]]:
            import asyncio

            async def main() -> tuple[list[dict[str, Any]], dict[str, str]]:
                async with open_asyncio_client(path) as aio:
                    return await aio.members(state="alive"), await aio.set_tags(delete=["b"])
            return asyncio.run(main())

        members, tags = await trio.to_thread.run_sync(asyncio_client)
        assert len(members) == 1
        assert "b" not in tags


async def test_tags_given_at_start_are_checked(short_tmp: Path) -> None:
    from p2pnode.errors import ConfigError

    for tags, message in [((("a", "1"), ("a", "2")), "tag a is given twice"),
                          ((("bad key", "1"),), "1-64 characters"),
                          (tuple((f"k{i}", "v") for i in range(33)), "33 tags")]:
        with pytest.raises(ConfigError, match=message):
            loopback_config(short_tmp, "a", tags=tags)
    async with running_nodes([loopback_config(short_tmp, "b", tags=(("x", ""),))]) as (n,):
        assert n.membership.me.tags == {"x": ""}
