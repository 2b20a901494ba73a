"""Prometheus metrics: the status counters flattened, served over HTTP on loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio
import trio.testing

from p2pnode.cli.metrics import MAX_CONNECTIONS, MAX_REQUEST, render, serve_metrics

from .test_cli import P2PNODE, spawn

STATUS: dict[str, Any] = {
    "ok": True, "node_id": "17aaacfe000f567446b9741628498f0e", "name": 'b "x"',
    "listen": "127.0.0.1:7002", "version": "0.1.0", "protocol": 3, "uptime_s": 1.704,
    "peers": 1, "socket": "/tmp/b.sock", "clients": 1,
    "messages": {"published": 0, "delivered": 2, "seen_cache": 2},
    "links": {"opened": 1, "closed": {"peer_left": 1}, "refused": {}},
    "security": {"links": "tls1.3", "network": "open", "members_only": False},
}


def test_render_flattens_the_status() -> None:
    text = render(STATUS)
    lines = text.splitlines()
    for line in (
        'p2pnode_info{node_id="17aaacfe000f567446b9741628498f0e",name="b \\"x\\"",'
        'version="0.1.0",protocol="3",listen="127.0.0.1:7002"} 1',
        "# TYPE p2pnode_uptime_seconds gauge", "p2pnode_uptime_seconds 1.704",
        "# TYPE p2pnode_peers gauge", "p2pnode_peers 1",
        "# TYPE p2pnode_messages_delivered_total counter", "p2pnode_messages_delivered_total 2",
        "# TYPE p2pnode_messages_seen_cache gauge", "p2pnode_messages_seen_cache 2",
        'p2pnode_links_closed_total{reason="peer_left"} 1',
        'p2pnode_security_info{links="tls1.3",network="open"} 1',
        "p2pnode_security_members_only 0",
    ):
        assert line in lines, line
    assert "socket" not in text


async def http(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_http_responder() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _host, port = await nursery.start(serve_metrics, "127.0.0.1", 0, lambda: STATUS)
            ok = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\n\r\n# TYPE p2pnode_info gauge\n" in ok
            assert (await http(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
            assert (await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 405")
            assert (await http(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
            assert (await http(port, b"GET /metrics HTTP/1.1\r\nX: "
                               + b"a" * (2 * MAX_REQUEST))).startswith(b"HTTP/1.1 400")
            # Over the connection cap, a connection is closed at once.
            idle = [await trio.open_tcp_stream("127.0.0.1", port)
                    for _ in range(MAX_CONNECTIONS)]
            await trio.testing.wait_all_tasks_blocked()
            assert await http(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
            for stream in idle:
                await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert (await http(port, b"GET /metrics HTTP/1.0\r\n\r\n")).startswith(
                b"HTTP/1.1 200")
            nursery.cancel_scope.cancel()


async def test_node_serves_metrics(short_tmp: Path) -> None:
    sock = str(short_tmp / "a.sock")
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
            "--socket", sock, "--data-dir", str(short_tmp / "a")]

    async def published(port: int) -> int:
        body = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        match = re.search(rb"\np2pnode_messages_published_total (\d+)\n", body)
        assert match, body
        return int(match.group(1))

    with trio.fail_after(20):
        async with spawn(args) as a:
            port = int((await a.wait_line(r"metrics on http://127\.0\.0\.1:(\d+)/")).group(1))
            assert await published(port) == 0
            await trio.run_process([*P2PNODE, "send", "--socket", sock, "one"],
                                   capture_stdout=True)
            assert await published(port) == 1
            a.process.terminate()
            assert await a.process.wait() == 0
