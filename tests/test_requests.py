"""Request/reply over real nodes on loopback (TLS), apps on real Unix sockets: four
nodes, a - b - c and d on b, so that c is two hops from a and d is off the path
between them (docs/api.md, "request"; docs/protocol.md, "Requests and replies")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.client import ApiReplyError, ReplyError, event_payload, open_client
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes

Mesh = dict[str, Node]


def peer_of(node: Node) -> tuple[tuple[str, int], ...]:
    assert node.listen_addr is not None
    return (("127.0.0.1", node.listen_addr[1]),)


@asynccontextmanager
async def four_nodes(tmp: Path, **overrides: Any) -> AsyncIterator[Mesh]:
    """a - b - c, and d linked to b only (static peers, no mDNS)."""
    async with running_nodes([loopback_config(tmp, "a", **overrides)]) as (a,):
        async with running_nodes([loopback_config(tmp, "b", peers=peer_of(a),
                                                  **overrides)]) as (b,):
            async with running_nodes([
                loopback_config(tmp, "c", peers=peer_of(b), **overrides),
                loopback_config(tmp, "d", peers=peer_of(b), **overrides),
            ]) as (c, d):
                await b.wait_peer_count(3, 3)
                for node in (a, c, d):
                    await node.wait_peer_count(1, 1)
                yield {"a": a, "b": b, "c": c, "d": d}


def answer_with(text: str) -> Callable[[bytes], Awaitable[str]]:
    async def handler(data: bytes) -> str:
        return f"{text}: {data.decode()}"
    return handler


@asynccontextmanager
async def servers(mesh: Mesh, handlers: dict[str, Callable[[bytes], Awaitable[str | bytes]]],
                  topic: str = "lights") -> AsyncIterator[None]:
    """Apps serving ``topic`` on the named nodes, subscribed when this enters."""
    async with trio.open_nursery() as nursery:
        clients = []
        for name, handler in handlers.items():
            client = await open_client(mesh[name].config.socket_path)
            clients.append(client)
            await nursery.start(client.serve, topic, handler)
        yield
        nursery.cancel_scope.cancel()
    for client in clients:
        await trio.aclose_forcefully(client.stream)


async def test_a_request_is_answered_two_hops_away_and_only_its_path_carries_the_reply(
        short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh, servers(mesh, {"c": answer_with("c did")}):
            async with open_client(mesh["a"].config.socket_path) as client:
                replies = await client.ask("lights", "on", timeout=5)
            assert replies == [{"from": mesh["c"].node_hex, "name": "c", "data": "c did: on"}]
            st = {name: node.requests.stats for name, node in mesh.items()}
            assert (st["a"].asked, st["a"].replies_taken) == (1, 1)
            assert (st["c"].delivered, st["c"].replies_sent) == (1, 1)
            assert (st["b"].replies_in, st["b"].replies_forwarded) == (1, 1)
            # Every node got the request; the reply went c -> b -> a and nowhere else.
            assert st["d"].delivered == 1
            assert (st["d"].replies_in, st["d"].replies_forwarded) == (0, 0)
            assert all(not s.replies_dropped and not s.replies_rejected for s in st.values())


async def test_replies_from_several_nodes_stop_at_max_replies(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh, servers(
                mesh, {name: answer_with(name) for name in "bcd"}):
            async with open_client(mesh["a"].config.socket_path) as client:
                start = trio.current_time()
                replies = await client.ask("lights", "x", timeout=10, max_replies=3)
                assert trio.current_time() - start < 5  # answered when the third came
                assert sorted(r["name"] for r in replies) == ["b", "c", "d"]
                assert {r["from"] for r in replies} == {mesh[n].node_hex for n in "bcd"}
                assert all(r["data"] == f"{r['name']}: x" for r in replies)
                two = await client.ask("lights", "y", timeout=10, max_replies=2)
                assert len(two) == 2
                assert len({r["from"] for r in two}) == 2


async def test_the_timeout_answers_with_the_replies_that_came(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh, servers(mesh, {"c": answer_with("c")}):
            async with open_client(mesh["a"].config.socket_path) as client:
                start = trio.current_time()
                replies = await client.ask("lights", "on", timeout=0.5, max_replies=5)
                assert trio.current_time() - start >= 0.5
                assert [r["name"] for r in replies] == ["c"]
                start = trio.current_time()
                assert await client.ask("nobody-serves-this", "?", timeout=0.3) == []
                assert trio.current_time() - start >= 0.3


async def test_bad_requests_and_replies_get_clear_errors(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh:
            async with open_client(mesh["a"].config.socket_path) as client:
                for timeout in (61, 0, -1):
                    with pytest.raises(ApiReplyError) as info:
                        await client.ask("t", "x", timeout=timeout)
                    assert info.value.code == "bad_request"
                    assert "at most 60 seconds" in info.value.message
                for bad in (0, 1001):
                    with pytest.raises(ApiReplyError, match="max_replies is 1-1000"):
                        await client.ask("t", "x", max_replies=bad)
                with pytest.raises(ApiReplyError, match="reserved"):
                    await client.ask("$mesh", "x")
                with pytest.raises(ApiReplyError, match="64 hex digits") as info:
                    await client.request({"op": "reply", "reply_to": "zz", "data": "x"})
                assert info.value.code == "bad_request"
                unknown = "00" * 32
                with pytest.raises(ApiReplyError, match="no request with this reply_to") as info:
                    await client.request({"op": "reply", "reply_to": unknown, "data": "x"})
                assert info.value.code == "request_gone"
                with pytest.raises(ApiReplyError, match="not two of them"):
                    await client.request({"op": "reply", "reply_to": unknown, "data": "x",
                                          "error": "y"})
                assert mesh["a"].requests.stats.asked == 0  # nothing went out


async def test_a_token_is_single_use_and_error_replies_reach_the_asker(
        short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh:
            c = await open_client(mesh["c"].config.socket_path)
            d = await open_client(mesh["d"].config.socket_path)
            async with c, d, open_client(mesh["a"].config.socket_path) as a:
                await c.subscribe(["lights"])
                await d.subscribe(["lights"])
                async with trio.open_nursery() as nursery:
                    answers: list[list[dict[str, Any]]] = []

                    async def ask() -> None:
                        answers.append(await a.ask("lights", "on", timeout=5, max_replies=2))

                    nursery.start_soon(ask)
                    at_c, at_d = await c.next_event(), await d.next_event()
                    assert at_c["reply_to"] == at_d["reply_to"]
                    assert (at_c["topic"], at_c["data"], at_c["hops"]) == ("lights", "on", 2)
                    assert at_c["origin"] == mesh["a"].node_hex
                    assert at_c["timeout"] == 5
                    token = at_c["reply_to"]
                    await c.request({"op": "reply", "reply_to": token, "data": "done"})
                    with pytest.raises(ApiReplyError, match="already replied") as info:
                        await c.request({"op": "reply", "reply_to": token, "data": "again"})
                    assert info.value.code == "request_gone"
                    await d.request({"op": "reply", "reply_to": token, "error": "bulb gone"})
                by_name = {r["name"]: r for r in answers[0]}
                assert by_name["c"]["data"] == "done"
                assert by_name["d"] == {"from": mesh["d"].node_hex, "name": "d",
                                        "error": "bulb gone"}


async def test_handler_failures_become_error_replies(short_tmp: Path) -> None:
    async def broken(data: bytes) -> str:
        if data == b"polite":
            raise ReplyError("no such light")
        if data == b"none":
            return None  # type: ignore[return-value]
        if data == b"big":
            return "x" * (600 << 10)
        raise ValueError("boom")

    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh, servers(mesh, {"c": broken}):
            async with open_client(mesh["a"].config.socket_path) as client:
                assert (await client.ask("lights", "polite"))[0]["error"] == "no such light"
                assert (await client.ask("lights", "x"))[0]["error"] == "ValueError: boom"
                assert (await client.ask("lights", "none"))[0]["error"] == (
                    "the handler returned NoneType, not str or bytes")
                binary = (await client.ask("lights", b"\xff\x00"))[0]
                assert binary["error"] == "ValueError: boom"
                assert (await client.ask("lights", "big"))[0]["error"] == (
                    "the handler's reply of 614400 bytes is over the 524288 a reply may carry")


async def raw_lines(stream: trio.SocketStream, count: int) -> list[dict[str, Any]]:
    """The next ``count`` lines from the node, parsed."""
    buf = b""
    while buf.count(b"\n") < count:
        data = await stream.receive_some(65536)
        assert data, "the node closed the connection"
        buf += data
    return [json.loads(line) for line in buf.splitlines()]


async def test_a_waiting_request_holds_back_later_replies_not_later_requests(
        short_tmp: Path) -> None:
    """Replies come in request order, but the node goes on reading: this connection
    answers its own request while the request waits."""
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh:
            stream = await trio.open_unix_socket(str(mesh["a"].config.socket_path))
            async with stream:
                send = stream.send_all
                await send(b'{"op":"subscribe","topics":["self"],"id":1}\n')
                assert await raw_lines(stream, 1) == [{"id": 1, "ok": True}]
                await send(b'{"op":"request","topic":"self","data":"q","timeout":5,"id":2}\n'
                           b'{"op":"sync","id":3}\n')
                [event] = await raw_lines(stream, 1)  # the request, to ourselves: no reply yet
                assert (event["event"], event["data"], event["hops"]) == ("message", "q", 0)
                reply = {"op": "reply", "reply_to": event["reply_to"], "data": "a", "id": 4}
                await send(json.dumps(reply).encode() + b"\n")
                lines = await raw_lines(stream, 3)
                assert [line["id"] for line in lines] == [2, 3, 4]
                assert lines[0]["replies"] == [{"from": mesh["a"].node_hex, "name": "a",
                                                "data": "a"}]
                assert lines[1:] == [{"id": 3, "ok": True}, {"id": 4, "ok": True}]


async def test_the_node_answers_a_waiting_request_before_it_closes_a_half_closed_connection(
        short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with four_nodes(short_tmp) as mesh, servers(mesh, {"c": answer_with("c")}):
            stream = await trio.open_unix_socket(str(mesh["a"].config.socket_path))
            async with stream:
                await stream.send_all(b'{"op":"request","topic":"lights","data":"1"}\n'
                                      b'{"op":"status","id":9}\n')
                await stream.send_eof()  # as `nc -N` does when its input ends
                lines = await raw_lines(stream, 2)
                assert lines[0]["replies"][0]["data"] == "c: 1"
                assert lines[1]["id"] == 9
                assert lines[1]["requests"]["asked"] == 1
                assert await stream.receive_some(1) == b""


async def test_the_asyncio_and_blocking_clients_ask_and_serve(short_tmp: Path) -> None:
    import asyncio
    import threading

    from p2pnode.client import BlockingClient, open_asyncio_client

    with trio.fail_after(30):
        async with four_nodes(short_tmp) as mesh:
            c_path, d_path = mesh["c"].config.socket_path, mesh["d"].config.socket_path
            ready = threading.Event()

            def blocking_server() -> None:
                with BlockingClient(d_path, timeout=5) as node:
                    node.subscribe(["t"])
                    ready.set()
                    node.serve("t", lambda data: b"blocking " + data)

            async def asyncio_side() -> list[dict[str, Any]]:
                async with open_asyncio_client(c_path) as node:
                    await node.subscribe(["t"])

                    async def handler(data: bytes) -> str:
                        return "asyncio " + data.decode()

                    server = asyncio.ensure_future(node.serve("t", handler))
                    await asyncio.to_thread(ready.wait, 10)
                    async with open_asyncio_client(c_path) as asker:
                        replies = await asker.ask("t", "hi", timeout=5, max_replies=2)
                    server.cancel()
                    return replies

            thread = threading.Thread(target=blocking_server, daemon=True)
            thread.start()
            replies = await trio.to_thread.run_sync(asyncio.run, asyncio_side())
            assert sorted(event_payload(r) for r in replies) == [b"asyncio hi", b"blocking hi"]
            def blocking_ask() -> list[dict[str, Any]]:
                # The client's own timeout (1 s) is stretched to cover the request's.
                with BlockingClient(mesh["a"].config.socket_path, timeout=1) as asker:
                    return asker.ask("t", "x", timeout=2, max_replies=1)

            blocking = await trio.to_thread.run_sync(blocking_ask)
            assert [r["name"] for r in blocking] == ["d"]
            await mesh["d"].stop()  # the blocking server sees the end of its connection
            await trio.to_thread.run_sync(thread.join, 10)
            assert not thread.is_alive()
