"""Structured logs: key=value lines by default, one JSON object per line with
--log-format json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import trio

from p2pnode.cli.logs import JsonFormatter, KeyValueFormatter, format_pairs

from .test_cli import spawn


def make_record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("p2pnode.links", logging.INFO, __file__, 1,
                               "link up: %s (%s)", ("a", "0d481229"), None)
    record.__dict__.update(extra)
    record.created = 1735732800.123
    return record


def test_key_value_lines() -> None:
    line = KeyValueFormatter().format(make_record(peer="0d481229", rtt_ms=0.5))
    assert line == ('time=2025-01-01T12:00:00.123Z level=info logger=p2pnode.links '
                    'message="link up: a (0d481229)" peer=0d481229 rtt_ms=0.5')
    assert format_pairs({"a": None, "b": True, "c": 'say "hi"', "d": "", "e": "x\ny"}) == (
        r'a=null b=true c="say \"hi\"" d="" e="x\ny"')


def test_json_lines_with_extra_fields_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = make_record(peer="0d481229", path=Path("/x"))
        record.exc_info = sys.exc_info()
    obj = json.loads(JsonFormatter().format(record))
    assert {k: obj[k] for k in ("time", "level", "logger", "message", "peer", "path")} == {
        "time": "2025-01-01T12:00:00.123Z", "level": "info", "logger": "p2pnode.links",
        "message": "link up: a (0d481229)", "peer": "0d481229", "path": "/x"}
    assert "ValueError: boom" in obj["exc"]


async def test_node_logs_json(short_tmp: Path) -> None:
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--log-format", "json",
            "--socket", str(short_tmp / "a.sock"), "--data-dir", str(short_tmp / "a")]
    with trio.fail_after(20):
        async with spawn(args) as a:
            await a.wait_line("open network")
            a.process.terminate()
            assert await a.process.wait() == 0
            await a.wait_line("signal 15: leaving")
    lines = [json.loads(line) for line in a.seen]
    notice = next(line for line in lines if line["level"] == "notice")
    assert notice["listen"].startswith("127.0.0.1:")
    assert {"time", "level", "logger", "message"} <= set(lines[-1])
