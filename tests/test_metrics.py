"""Prometheus metrics: the status schema exported, served over HTTP on loopback, read back
by Prometheus's own parser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import msgspec
import trio
import trio.testing
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from p2pnode.api.status import NodeStatus
from p2pnode.api.status_fields import BY_PATH, FIELDS
from p2pnode.cli.metrics import (
    MAX_CONNECTIONS,
    MAX_REQUEST,
    NOT_EXPORTED,
    exported,
    metric_name,
    render,
    sample_name,
    serve_metrics,
)

from .test_cli import P2PNODE, spawn
from .test_status_schema import full_reply, full_status

STATUS = full_status({
    "node_id": "17aaacfe000f567446b9741628498f0e", "name": 'b "x"',
    "listen": "127.0.0.1:7002", "version": "0.1.0", "protocol": 3, "uptime_s": 1.704,
    "peers": 1, "socket": "/tmp/b.sock", "messages.delivered": 2, "messages.seen_cache": 2,
    "links.closed": {"peer_left": 1}, "links.refused": {}, "links.bytes_sent": 795,
    "security.links": "tls1.3", "security.network": "open", "security.members_only": False,
    "mesh_view.nodes": 7, "history.max_age_s": 300.0,
})


def families(text: str) -> dict[str, Metric]:
    """The families of an exposition, parsed by Prometheus's own client library."""
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(parsed) == text.count("# TYPE "), "a family was split or merged"
    return parsed


def test_render_exports_the_status() -> None:
    text = render(STATUS)
    lines = text.splitlines()
    for line in (
        'p2pnode_info{node_id="17aaacfe000f567446b9741628498f0e",name="b \\"x\\"",'
        'listen="127.0.0.1:7002",version="0.1.0",protocol="3"} 1',
        "# TYPE p2pnode_uptime_seconds gauge", "p2pnode_uptime_seconds 1.704",
        "# HELP p2pnode_uptime_seconds seconds since the node started",
        "# TYPE p2pnode_peers gauge", "p2pnode_peers 1",
        "# TYPE p2pnode_messages_delivered_total counter", "p2pnode_messages_delivered_total 2",
        "# TYPE p2pnode_messages_seen_cache gauge", "p2pnode_messages_seen_cache 2",
        'p2pnode_links_closed_total{reason="peer_left"} 1',
        "# TYPE p2pnode_links_refused_total counter",
        "# TYPE p2pnode_links_sent_bytes_total counter", "p2pnode_links_sent_bytes_total 795",
        "# TYPE p2pnode_mesh_view_nodes gauge", "p2pnode_mesh_view_nodes 7",
        "# TYPE p2pnode_history_max_age_seconds gauge", "p2pnode_history_max_age_seconds 300.0",
        'p2pnode_security_info{links="tls1.3",network="open"} 1',
        "# TYPE p2pnode_security_members_only gauge", "p2pnode_security_members_only 0",
    ):
        assert line in lines, line
    assert "socket" not in text
    assert "recent_gaps" not in text
    # Markdown links and backticks of the descriptions stay out of HELP.
    assert ("# HELP p2pnode_messages_rejected_total batches dropped because their signature,"
            " key or contents were bad") in lines
    assert ("# HELP p2pnode_links_refused_total connections this node refused, by code; busy"
            " counts inbound connections closed because max_pending_handshakes were already"
            " in their link handshake") in lines
    # The names before this schema, for dashboards (docs/operations.md lists them).
    for old in ("p2pnode_mesh_view_nodes_total", "p2pnode_links_bytes_sent_total"):
        assert old not in text


def test_every_field_is_exported_with_help_and_its_type() -> None:
    got = families(render(full_status()))
    info_labels = {name: set(f.samples[0].labels) for name, f in got.items()
                   if name.endswith("_info")}
    for field in FIELDS:
        if not exported(field):
            assert field.kind == "list" or field.path in NOT_EXPORTED
            continue
        if field.kind == "info":
            family = f"p2pnode_{field.section}_info" if field.section else "p2pnode_info"
            assert field.name in info_labels[family], field.path
            continue
        family = got[metric_name(field)]
        want = "counter" if field.kind in ("counter", "by_reason") else "gauge"
        assert family.type == want, field.path
        assert family.documentation == field.help
        assert {s.name for s in family.samples} == {sample_name(field)}
    for family in got.values():
        assert family.documentation, family.name
        assert family.type in ("counter", "gauge"), family.name


def test_names_follow_prometheus_naming() -> None:
    for field in (f for f in FIELDS if exported(f) and f.kind != "info"):
        name = sample_name(field)
        assert re.fullmatch(r"p2pnode(_[a-z0-9]+)+", name), name
        core = name.removesuffix("_total")
        assert name.endswith("_total") == (field.kind in ("counter", "by_reason")), name
        assert core.endswith(f"_{field.unit}") if field.unit else True, name
        assert not core.endswith("_s"), name
        assert "_bytes_" not in core, name
    assert metric_name(BY_PATH["links.bytes_received"]) == "p2pnode_links_received_bytes"
    assert metric_name(BY_PATH["history.bytes"]) == "p2pnode_history_bytes"


def test_operations_md_names_metrics_that_exist() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = text[text.index("### metrics"):text.index("### logs")]
    renamed = section[section.index("| before | now | why |"):]
    renamed = renamed[:renamed.index("\n\n")]
    before = {m for row in renamed.splitlines()[2:]
              for m in re.findall(r"`(p2pnode_\w+)`", row.split(" | ")[0])}
    now = {m for row in renamed.splitlines()[2:]
           for m in re.findall(r"`(p2pnode_\w+)`", row.split(" | ")[1])}
    assert len(before) == len(now) == 4
    names = set(re.findall(r"\b(p2pnode_[a-z_]*[a-z])\b", section)) - before
    exposition = render(full_status())
    samples = {s.name for f in text_string_to_metric_families(exposition) for s in f.samples}
    assert now <= names
    assert names <= samples, names - samples
    assert not before & samples


def test_sections_a_node_does_not_run_are_left_out() -> None:
    reply = full_reply()
    del reply["mdns"]
    text = render(msgspec.convert(reply, NodeStatus))
    assert "p2pnode_mdns_" not in text
    assert "p2pnode_links_opened_total" in text


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
            assert b"\r\n\r\n# HELP p2pnode_info " in ok
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


async def fetch_metrics(port: int) -> str:
    """``curl`` of /metrics (a raw request when curl is not installed)."""
    url = f"http://127.0.0.1:{port}/metrics"
    if shutil.which("curl"):
        res = await trio.run_process(["curl", "-sSf", "--noproxy", "*", "--max-time", "5", url],
                                     capture_stdout=True)
        return res.stdout.decode()
    head, _, body = (await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body.decode()


async def test_node_serves_metrics(short_tmp: Path) -> None:
    sock = str(short_tmp / "a.sock")
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
            "--socket", sock, "--data-dir", str(short_tmp / "a")]

    def published(got: dict[str, Metric]) -> float:
        (sample,) = got["p2pnode_messages_published"].samples
        assert sample.name == "p2pnode_messages_published_total"
        return sample.value

    with trio.fail_after(20):
        async with spawn(args) as a:
            port = int((await a.wait_line(r"metrics on http://127\.0\.0\.1:(\d+)/")).group(1))
            got = families(await fetch_metrics(port))
            for family in got.values():
                assert family.documentation, family.name
                assert family.type in ("counter", "gauge"), family.name
            assert got["p2pnode_mesh_view_nodes"].type == "gauge"
            assert got["p2pnode_mesh_view_links"].type == "gauge"
            assert got["p2pnode_links_sent_bytes"].type == "counter"
            assert got["p2pnode_uptime_seconds"].type == "gauge"
            # Every field of the sections this node runs (not mdns, nor interest: tree mode).
            want = {metric_name(f) for f in FIELDS
                    if exported(f) and f.kind != "info" and f.section not in ("mdns", "interest")}
            assert want <= set(got), want - set(got)
            assert published(got) == 0
            await trio.run_process([*P2PNODE, "send", "--socket", sock, "one"],
                                   capture_stdout=True)
            assert published(families(await fetch_metrics(port))) == 1
            a.process.terminate()
            assert await a.process.wait() == 0
