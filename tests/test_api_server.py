"""The local API over a real Unix socket: requests, errors, isolation, the socket file."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api import server as api_server
from p2pnode.client import BlockingClient, open_client
from p2pnode.config.settings import MIN_FRAME
from p2pnode.errors import SocketInUse
from p2pnode.node import Node
from p2pnode.wire.messages import decode_kept_body

from .conftest import loopback_config, running_nodes


class LineConn:
    """A raw client connection that speaks JSON lines."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, node: Node) -> LineConn:
        return cls(await trio.open_unix_socket(str(node.config.socket_path)))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, obj: dict[str, Any]) -> dict[str, Any]:
        await self.send_raw(json.dumps(obj).encode() + b"\n")
        return await self.line()


@pytest.fixture
async def node(short_tmp: Path) -> Any:
    async with running_nodes([loopback_config(short_tmp, "a", max_payload=4096,
                                              max_frame=MIN_FRAME)]) as (n,):
        yield n


async def test_requests_and_pipelined_replies_in_order(node: Node) -> None:
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        await conn.ask({"op": "subscribe", "topics": ["chat"]})
        batch = b"".join(
            json.dumps({"op": "publish", "topic": "chat", "data": f"m{i}", "id": i}).encode()
            + b"\n"
            for i in range(50)
        )
        await conn.send_raw(batch + b'{"op":"status","id":"s"}\n')
        replies, events = [], []
        while len(replies) < 51 or len(events) < 50:
            obj = await conn.line()
            (events if "event" in obj else replies).append(obj)
        assert [r["id"] for r in replies] == [*range(50), "s"]
        assert all(r["ok"] for r in replies)
        assert [e["data"] for e in events] == [f"m{i}" for i in range(50)]
        assert {e["hops"] for e in events} == {0}
        assert events[0]["origin"] == node.node_hex
        assert replies[-1]["node_id"] == node.node_hex
        assert replies[-1]["listen"] == node.listen_str
        await conn.stream.aclose()


async def test_binary_payload_round_trips_as_base64(node: Node) -> None:
    with trio.fail_after(10):
        async with await open_client(node.config.socket_path) as client:
            await client.subscribe([])
            await client.publish("bin", b"\xff\x00\xfe")
            event = await client.next_event()
            assert event["data_b64"] == "/wD+"
            assert "data" not in event


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"this is not json\n", "bad_json"),
        (b'{"op": "publish", "topic": "t", "data": "x"\n', "bad_json"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"op": "dance", "id": 7}\n', "unknown_op"),
        (b'{"op": "publish", "topic": "", "data": "x"}\n', "bad_request"),
        (b'{"op": "publish", "topic": "t", "data": "x", "to": "nope"}\n', "bad_request"),
        (b'{"op": "publish", "topic": "t", "data_b64": "***"}\n', "bad_request"),
        (b'{"op": "subscribe", "topics": "chat"}\n', "bad_request"),
        (b'{"op": "publish", "topic": "t", "data": "' + b"x" * 5000 + b'"}\n', "too_large"),
    ],
)
async def test_bad_requests_get_errors_and_the_connection_stays_usable(
    node: Node, raw: bytes, code: str
) -> None:
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        other = await LineConn.open(node)
        await conn.send_raw(raw)
        reply = await conn.line()
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert reply["error"]["message"]
        if code == "unknown_op":
            assert reply["id"] == 7
        # The same connection still works, and so does another client.
        assert (await conn.ask({"op": "status", "id": 1}))["ok"] is True
        assert (await other.ask({"op": "peers"}))["peers"] == []
        await conn.stream.aclose()
        await other.stream.aclose()


async def test_oversize_line_gets_too_large_and_closes_only_that_client(node: Node) -> None:
    with trio.fail_after(10):
        bad = await LineConn.open(node)
        good = await LineConn.open(node)
        await good.ask({"op": "subscribe", "topics": ["t"]})
        await bad.send_raw(b"x" * (node.config.max_request_line + 100))
        reply = await bad.line()
        assert reply["error"]["code"] == "too_large"
        with pytest.raises(EOFError):
            await bad.line()
        first = await good.ask({"op": "publish", "topic": "t", "data": "hi"})
        second = await good.line()
        reply, event = (first, second) if "ok" in first else (second, first)
        assert reply["ok"] is True
        assert event["data"] == "hi"
        await bad.stream.aclose()
        await good.stream.aclose()


async def test_socket_file_mode_stale_and_live(short_tmp: Path) -> None:
    cfg = loopback_config(short_tmp, "a")
    path = cfg.socket_path
    # A stale socket file from a crashed node: bound, then closed, file left behind.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    with trio.fail_after(10):
        async with running_nodes([cfg]):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

            def blocking_status() -> dict[str, Any]:
                with BlockingClient(path, timeout=5) as client:
                    return client.status()

            assert (await trio.to_thread.run_sync(blocking_status))["name"] == "a"
            # A live node's socket is not stolen.
            other = loopback_config(short_tmp, "b", socket_path=path)
            with pytest.raises(SocketInUse, match="already serving"):
                await Node(other).run()
            assert path.exists()
        assert not path.exists()  # removed on exit


async def test_a_regular_file_is_never_replaced(short_tmp: Path) -> None:
    cfg = loopback_config(short_tmp, "a")
    cfg.socket_path.write_text("precious")
    with trio.fail_after(10), pytest.raises(SocketInUse, match="not a socket"):
        await Node(cfg).run()
    assert cfg.socket_path.read_text() == "precious"


async def test_slow_subscriber_drops_events_but_not_others(short_tmp: Path) -> None:
    """A subscriber that stops reading loses events (counted); a healthy one gets all."""
    cfg = loopback_config(short_tmp, "a", client_queue_bytes=64 * 1024)
    with trio.fail_after(20):
        async with running_nodes([cfg]) as (node,):
            stuck = await LineConn.open(node)
            await stuck.ask({"op": "subscribe", "topics": ["t"]})
            async with await open_client(cfg.socket_path) as healthy:
                await healthy.subscribe(["t"])
                async with await open_client(cfg.socket_path) as pub:
                    for i in range(3000):
                        await pub.send({"op": "publish", "topic": "t", "data": f"{i:0100d}"})
                        if i % 100 == 99:
                            for _ in range(100):
                                await pub.reply()
                            for _ in range(100):
                                await healthy.next_event()
            assert node.api is not None
            assert node.api.stats.events_dropped > 0
            assert node.status_info().api.events_dropped > 0
            await stuck.stream.aclose()


async def test_a_waiting_peers_request_is_answered_after_the_client_half_closes(
    node: Node,
) -> None:
    """`echo REQUEST | nc -N` shuts down its sending side and still reads the reply."""
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        await conn.send_raw(b'{"op":"peers","wait_min":1,"timeout":0.3,"id":"w"}\n')
        await conn.stream.send_eof()
        reply = await conn.line()
        assert reply["id"] == "w"
        assert reply["error"]["code"] == "timeout"
        assert "at least 1" in reply["error"]["message"]
        await conn.stream.aclose()


async def test_quiet_publishes_are_answered_only_when_refused(node: Node) -> None:
    """``"ack": false``: no reply for a publish taken, an error naming the request's
    number (``req``) for one refused; ``sync``'s reply comes after both."""
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        await conn.ask({"op": "subscribe", "topics": ["q"]})  # request 1
        await conn.send_raw(
            b'{"op":"publish","topic":"q","data":"a","ack":false}\n'  # 2: taken
            b'{"op":"publish","topic":"","data":"b","ack":false}\n'  # 3: no topic
            b'{"op":"publish","topic":"q","data":"' + b"x" * 5000 + b'","ack":false}\n'  # 4
            b'{"op":"publish","topic":"q","data":"c","ack":false}\n'  # 5: taken
            b'{"op":"sync","id":"s"}\n')  # 6
        got = [await conn.line() for _ in range(5)]
        replies = [g for g in got if "event" not in g]
        assert [e["data"] for e in got if "event" in e] == ["a", "c"]
        assert [(r["ok"], r.get("req"), r.get("id")) for r in replies] == [
            (False, 3, None), (False, 4, None), (True, None, "s")]
        assert replies[1]["error"]["code"] == "too_large"
        await conn.stream.aclose()


async def test_a_stopping_node_tells_its_clients_and_confirms_quiet_publishes(
        short_tmp: Path) -> None:
    """``Node.stop``: each client gets a ``closing`` event with the number of its
    requests handled, so the pipelined client's close confirms its quiet publishes."""
    cfg = loopback_config(short_tmp, "a")
    with trio.fail_after(15):
        async with running_nodes([cfg]) as (n,):
            conn = await LineConn.open(n)
            await conn.send_raw(b'{"op":"publish","topic":"q","data":"a","ack":false}\n'
                                b'{"op":"sync"}\n')
            assert await conn.line() == {"ok": True}
            async with open_client(cfg.socket_path) as client:
                await client.publish("q", "b")
                await client.publish("q", "c")
                await client.request({"op": "peers"})  # both sent and handled
                await client.publish("q", "d")  # quiet, handled once the node reads it
                await client.flush()
                await client.publish("q", "e")
                await trio.testing.wait_all_tasks_blocked()
                await n.stop()
                assert await conn.line() == {"event": "closing",
                                             "reason": "the node is stopping", "handled": 2}
                with pytest.raises(trio.EndOfChannel, match="the node is stopping"):
                    await client.next_event()
            await conn.stream.aclose()
            assert client.unacknowledged == 0  # "e" was confirmed by the closing event


async def test_a_client_over_its_publish_rate_is_refused_per_publish(
        short_tmp: Path, mock_clock: trio.testing.MockClock) -> None:
    # 40 publishes a second, bursts of 10: of 20 publishes in one write (one read, one
    # reading of the clock), the first 10 are taken and the next 10 refused by number;
    # a second later the bucket is full again. The clock moves only when told to.
    config = loopback_config(short_tmp, "a", client_publish_per_s=40.0)
    async with running_nodes([config]) as (node,):
        with trio.fail_after(10):
            conn = await LineConn.open(node)
            for burst in range(2):
                await conn.send_raw(b"".join(
                    b'{"op":"publish","topic":"t","data":"m","id":%d}\n' % i
                    for i in range(20)))
                replies = [await conn.line() for _ in range(20)]
                assert [r["id"] for r in replies] == list(range(20))
                assert [r["ok"] for r in replies] == [True] * 10 + [False] * 10
                assert {r["error"]["code"] for r in replies[10:]} == {"rate_limited"}
                assert node.api is not None
                assert node.api.stats.rate_limited == 10 * (burst + 1)
                mock_clock.jump(1.0)  # the bucket refills
            await conn.stream.aclose()


async def test_spaces_around_a_request_and_blank_lines_are_taken(node: Node) -> None:
    with trio.fail_after(10):
        conn = await LineConn.open(node)
        await conn.send_raw(b'\n  \r\n\t{"op": "status", "id": 1} \r\n{"op":"sync","id":2}\n')
        assert [(r["id"], r["ok"]) for r in [await conn.line(), await conn.line()]] == [
            (1, True), (2, True)]
        await conn.stream.aclose()


async def test_on_deliver_callbacks_get_messages_no_app_subscribed_to(node: Node) -> None:
    # The node builds a message published here only for a taker: an app's subscription
    # or a callback (``on_deliver``, added at any time).
    before = node.delivered
    node.publish("nobody", b"x", defer_flush=True)
    assert node.delivered == before + 1  # counted, built for no one
    got: list[Any] = []
    node.on_deliver.append(got.append)
    node.publish("nobody", b"y", defer_flush=True)
    assert [(msg.topic, msg.data) for msg in got] == [("nobody", b"y")]
    node.on_deliver.remove(got.append)
    node.publish("nobody", b"z", defer_flush=True)
    assert len(got) == 1


async def test_publishes_an_app_sent_ahead_are_signed_together(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishes that fill several reads of the socket, all sent before the node reads
    the first: one signed batch for all of them, not one per read, nor one per turn
    given to other tasks between two lines."""
    monkeypatch.setattr(api_server, "TURN_BUDGET", 0.0)  # a turn between all lines
    async with running_nodes([loopback_config(short_tmp, "a")]) as (node,):
        with trio.fail_after(10):
            line = b'{"op":"publish","topic":"q","data":"' + b"x" * 200 + b'","ack":false}\n'
            blob = line * 500 + b'{"op":"sync","id":"s"}\n'  # about 120 KiB: 2 reads
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            raw.connect(str(node.config.socket_path))
            raw.setblocking(False)
            assert raw.send(blob) == len(blob)  # all of it waits before the node reads
            conn = LineConn(trio.SocketStream(trio.socket.from_stdlib_socket(raw)))
            assert (await conn.line())["id"] == "s"
            batches = [entry for entry in node.router.history
                       if decode_kept_body(entry.batch.body).items[0].topic == "q"]
            assert sum(len(decode_kept_body(e.batch.body).items) for e in batches) == 500
            assert len(batches) == 1
            await conn.stream.aclose()
