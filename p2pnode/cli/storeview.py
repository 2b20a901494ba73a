"""``p2pnode store``: what a node's message store holds (docs/store.md, "Tooling").

Without ``--data-dir``/``--file`` it asks the running node (the API op ``store``);
with one of them it reads a stopped node's store file itself, read-only
(``p2pnode.store.report``). Either way the report is a JSON object (``--json``
prints it) that ``store_text`` makes readable. The report is read as plain JSON: the
node may be of another version, so a missing field is shown as ``?`` or left out.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

from ..client import ApiReplyError
from ..errors import ConfigError, P2PError
from ..store.db import StoreBroken
from ..store.report import data_dir_store, read_file
from .explain import NoNode, open_client
from .statusview import format_duration
from .text import one_line, plural, table

#: Rows of the origin and durable subscription tables shown at most (``--json``: all).
MAX_ROWS = 20


async def cmd_store(args: argparse.Namespace) -> int:
    """Print the store report of the node on the socket, or of a stopped node's file."""
    if args.data_dir is not None or args.file is not None:
        report = read_report(args)
    else:
        report = await ask_node(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(store_text(report))
    return 0


def read_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report of ``--file PATH`` or of ``--data-dir DIR``'s store, read from the
    file. Raises ``ConfigError`` (``StoreBroken``: a file that is not a store)."""
    if args.socket is not None:
        raise ConfigError("--socket asks a running node, --data-dir and --file read a "
                          "stopped node's file: give one or the other")
    if args.file is not None:
        if not args.file.exists():
            raise ConfigError(f"--file {args.file}: no such file")
        path = args.file
    else:
        path = data_dir_store(args.data_dir)
    try:
        return {"source": "file", **read_file(path)}
    except StoreBroken as exc:
        raise ConfigError(f"{path}: not a p2pnode message store that can be read: "
                          f"{exc.problem}") from None


async def ask_node(args: argparse.Namespace) -> dict[str, Any]:
    """The node's reply to ``store``. Raises ``NoNode`` (with a hint to read the file
    instead) or ``P2PError``."""
    try:
        client = await open_client(args.socket, server_user=args.server_user)
    except NoNode as exc:
        raise NoNode(f"{exc} (to read a stopped node's store: p2pnode store --data-dir "
                     "DIR, or --file PATH)") from None
    async with client:
        try:
            reply = await client.request({"op": "store"})
        except ApiReplyError as exc:
            if exc.code == "unknown_op":
                raise P2PError("this node is too old for `p2pnode store` (its API has no "
                               "`store` op); read its file: p2pnode store --data-dir DIR "
                               "once it is stopped") from None
            raise
    reply.pop("ok", None)
    return {"source": "node", **reply}


def format_bytes(value: Any) -> str:
    """``123 B``, ``4.0 KiB``, ``1.5 MiB``... (``?`` for a value that is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def store_text(report: dict[str, Any]) -> str:
    """The readable report."""
    if report.get("enabled") is False:
        return ("store     off: this node keeps no message store (it runs with --store none, "
                "or was given its identity); history is in memory only")
    return "\n".join(_rows(report))


def _row(label: str, text: str) -> str:
    return f"{label:<9} {text}".rstrip()


def _duration(seconds: float) -> str:
    """``format_duration`` without a trailing ``0s``: ``1d``, ``2h 5m``, ``0s``."""
    text = format_duration(seconds)
    return text.removesuffix(" 0s")


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _rows(r: dict[str, Any]) -> Iterator[str]:
    g = r.get
    where = f"{one_line(str(g('path', '?')))} ({format_bytes(g('file_bytes'))} on disk)"
    if g("source") == "file":
        where += ", read from the file (the node is stopped)"
    elif g("sync"):
        where += f", sync {g('sync')}"
    yield _row("store", where)
    text = (f"{_number(g('messages'))} in {_number(g('rows'))} batches "
            f"(positions {_number(g('first_pos'))}-{_number(g('last_pos'))}), "
            f"{format_bytes(g('bytes'))}")
    if isinstance(g("max_bytes"), int):
        text += f" of {format_bytes(g('max_bytes'))}" if g("max_bytes") else " (no limit)"
    max_age = g("max_age_s")
    if isinstance(max_age, int | float):
        text += (f", kept {_duration(max_age)} after publication" if max_age
                 else ", kept without an age limit")
    yield _row("messages", text)
    for key in ("oldest", "newest"):
        when, ago = g(f"{key}_time"), g(f"{key}_ago_s")
        yield _row(key, f"{when} ({_duration(ago)} ago)"
                   if isinstance(ago, int | float) else "none: the store is empty")
    yield from _origin_rows(r)
    yield from _durable_rows(r)
    yield from _writer_rows(r)


def _origin_rows(r: dict[str, Any]) -> Iterator[str]:
    origins = [o for o in r.get("origins") or [] if isinstance(o, dict)]
    total = r.get("origins_total", len(origins))
    yield _row("origins", f"{_number(total)} (messages stored of each node that published)")
    if origins:
        rows = [("NODE", "NAME", "MESSAGES")]
        rows += [(str(o.get("origin", "?")), one_line(str(o.get("name", "-"))),
                  _number(o.get("messages"))) for o in origins[:MAX_ROWS]]
        yield from (_row("", line) for line in table(rows))
        if isinstance(total, int) and total > len(rows) - 1:
            yield _row("", f"... and {plural(total - len(rows) + 1, 'other')} (--json: "
                           f"the first {len(origins)})")


def _durable_rows(r: dict[str, Any]) -> Iterator[str]:
    subs = [s for s in r.get("subscriptions") or [] if isinstance(s, dict)]
    count = r.get("durables", len(subs))
    yield _row("durable", plural(count, "subscription") if isinstance(count, int)
               else "? subscriptions")
    if not subs:
        return
    rows = [("NAME", "TOPICS", "POSITION", "LAG", "LOST", "UPDATED")]
    for s in subs[:MAX_ROWS]:
        topics = s.get("topics")
        ago = s.get("updated_ago_s")
        rows.append((one_line(str(s.get("name", "?"))),
                     one_line(",".join(map(str, topics))) if isinstance(topics, list) else "?",
                     _number(s.get("acked")), _number(s.get("lag")), _number(s.get("lost")),
                     f"{_duration(ago)} ago" if isinstance(ago, int | float) else "?"))
    yield from (_row("", line) for line in table(rows))
    if isinstance(count, int) and count > len(rows) - 1:
        yield _row("", f"... and {plural(count - len(rows) + 1, 'other')}")


def _writer_rows(r: dict[str, Any]) -> Iterator[str]:
    """What the node's writer did (only a node reports it)."""
    if "queued" not in r:
        return
    g = r.get
    yield _row("writer", f"{_number(g('queued'))} batches queued since start, "
               f"{_number(g('pending'))} waiting, {_number(g('writes'))} writes, "
               f"{_number(g('removed'))} removed by retention, {_number(g('dropped'))} "
               "dropped")
    if g("error"):
        yield _row("", f"WRITES FAIL: {one_line(str(g('error')))}")
    unreadable = g("unreadable")
    yield _row("restored", f"{_number(g('restored'))} batches into history at start"
               + (f" ({_number(unreadable)} unreadable, left out)" if unreadable else ""))
