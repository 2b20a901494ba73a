"""`p2pnode monitor` and `p2pnode status` against real nodes (subprocesses on loopback)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api.monitor import link_event, log_event
from p2pnode.api.protocol import ApiError, Monitor, parse_request
from p2pnode.cli.commands import _print_events, monitor_line
from p2pnode.cli.text import check_count
from p2pnode.errors import P2PError

from .test_cli import P2PNODE, Proc, reap, spawn


def run_args(tmp: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name,
            "--socket", str(tmp / f"{name}.sock"), "--data-dir", str(tmp / name), *extra]


async def test_monitor_streams_logs_links_and_deliveries(short_tmp: Path) -> None:
    sock_a = str(short_tmp / "a.sock")
    with trio.fail_after(30):
        async with spawn(run_args(short_tmp, "a")) as a:
            port = (await a.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
            monitor = await trio.lowlevel.open_process(
                [*P2PNODE, "monitor", "--socket", sock_a, "--messages", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await Proc(monitor).wait_line("monitoring")
                async with spawn(run_args(short_tmp, "b", "--peer", f"127.0.0.1:{port}")):
                    out = Proc(monitor, monitor.stdout)
                    await out.wait_line('"event": "link", "state": "up", "name": "b"')
                    await out.wait_line('"event": "log", .*"message": "link up: b ')
                    await trio.run_process([*P2PNODE, "send", "--socket", sock_a, "--topic",
                                            "t", "hello"], capture_stdout=True)
                    line = (await out.wait_line('"event": "delivered"')).string
                    assert json.loads(line)["size"] == 5
                    assert json.loads(line)["topic"] == "t"
                    status = await trio.run_process(
                        [*P2PNODE, "status", "--socket", sock_a, "--interval", "0"],
                        capture_stdout=True)
                    text = status.stdout.decode()
                    assert "links     1 up (1 opened, 0 closed, 0 dials since start)" in text
                    assert "delivered " in text
                    assert "\n          b  " in text
                await out.wait_line('"event": "link", "state": "down", "name": "b"')
            finally:
                await reap(monitor)


def test_monitor_request_and_event_lines() -> None:
    assert parse_request(b'{"op":"monitor"}') == Monitor()
    with pytest.raises(ApiError, match="bad_request"):
        parse_request(b'{"op":"monitor","level":"loud"}')
    up = logging.LogRecord("p2pnode.links", logging.INFO, "", 0, "link up: %s (%s) %s %s",
                           ("b", "0d481229", "in", "127.0.0.1:5"), None)
    down = logging.LogRecord("p2pnode.links", logging.INFO, "", 0, "link down: %s (%s): %s",
                             ("b", "0d481229", "timeout"), None)
    # The link manager's records carry their fields (extra=...): the events come from them.
    peer = {"peer_id": "0d481229" + "0" * 24, "peer_name": "b"}
    up.__dict__.update(peer, link="up", direction="in", addr="127.0.0.1:5")
    down.__dict__.update(peer, link="down", direction="in", addr="127.0.0.1:5",
                         reason="timeout")
    assert json.loads(link_event(up) or b"") == {
        "event": "link", "state": "up", "name": "b", "node_id": "0d481229",
        "direction": "in", "addr": "127.0.0.1:5"}
    assert json.loads(link_event(down) or b"")["reason"] == "timeout"
    assert link_event(logging.LogRecord("p2pnode.links", logging.INFO, "", 0, "x", (), None)) \
        is None
    event = json.loads(log_event(up))
    assert monitor_line(event, "info") == f"{event['time']} info    p2pnode.links: link up: " \
        f"b (0d481229) in 127.0.0.1:5 peer_id={peer['peer_id']} peer_name=b link=up " \
        "direction=in addr=127.0.0.1:5"
    assert monitor_line(json.loads(link_event(up) or b""), "info") is None
    assert monitor_line(json.loads(link_event(down) or b""), "warning") == \
        "link down: b (0d481229) timeout"
    assert monitor_line({"event": "dropped", "count": 3}, "info") == \
        "(3 events dropped: this monitor did not keep up)"


class FakeClient:
    """Hands out ``events`` as ``Client.events`` would."""

    def __init__(self, events: list[dict[str, object]]) -> None:
        self._events = events

    async def events(self) -> AsyncGenerator[dict[str, object], None]:
        for event in self._events:
            await trio.lowlevel.checkpoint()
            yield event


async def test_monitor_prints_events_up_to_count(capsys: pytest.CaptureFixture[str]) -> None:
    events: list[dict[str, object]] = [
        {"event": "log", "message": "a"}, {"event": "link", "state": "up"},
        {"event": "log", "message": "b"}]
    client: Any = FakeClient(events)
    line_of = partial(monitor_line, level="info")  # the link event is no line
    for count, printed in ((2, 2), (None, 2)):
        await _print_events(client, line_of, count)
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == printed
        assert lines[-1].endswith("None: b")
    await _print_events(client, json.dumps, 1)
    assert json.loads(capsys.readouterr().out) == events[0]
    check_count(None)
    check_count(1)
    with pytest.raises(P2PError, match="at least 1"):
        check_count(0)
