"""``p2pnode members`` and ``p2pnode tags``: the member list of the mesh and this node's
tags, from the running node (the API ops ``members`` and ``tags``; docs/cli.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config.tags import parse_tag
from ..errors import ConfigError
from .explain import open_client
from .statusview import format_duration
from .text import one_line, plural, table


def _pairs(texts: list[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` flags as a dict. Raises ``ConfigError`` naming the flag."""
    out: dict[str, str] = {}
    for text in texts:
        try:
            key, value = parse_tag(text)
        except ValueError as exc:
            raise ConfigError(f"{flag} {text!r}: {exc}") from None
        if key in out:
            raise ConfigError(f"{flag}: tag {key} is given twice")
        out[key] = value
    return out


async def cmd_members(args: argparse.Namespace) -> int:
    """Print the members (those with every ``--tag``, in any ``--state``)."""
    want = _pairs(args.tag, "--tag")
    async with await open_client(args.socket, server_user=args.server_user) as client:
        members = await client.members(want, args.state or None)
    if args.json:
        print(json.dumps(members, indent=2))
    else:
        print(members_table(members))
    return 0


def members_table(members: list[dict[str, Any]]) -> str:
    """The readable ``p2pnode members``: one row per member, then a count per state."""
    if not members:
        return "no members match"
    rows = [("NODE ID", "NAME", "STATE", "SINCE", "ADDRESS", "TAGS")]
    for m in members:
        since = m.get("since_s")
        rows.append((
            str(m.get("node_id", "?")),
            one_line(str(m.get("name", "?"))) + (" (this node)" if m.get("self") else ""),
            str(m.get("state", "?")),
            format_duration(since) if isinstance(since, int | float) else "?",
            ",".join(m.get("addrs") or []) or "-",
            format_tags(m.get("tags") or {}) or "-"))
    states: dict[str, int] = {}
    for m in members:
        states[str(m.get("state"))] = states.get(str(m.get("state")), 0) + 1
    count = ", ".join(f"{n} {state}" for state, n in states.items())
    return "\n".join([*table(rows), f"\n{plural(len(members), 'member')}: {count}"])


def format_tags(tags: dict[str, Any]) -> str:
    """Tags as ``key=value,key=value``, sorted by key."""
    return ",".join(f"{k}={one_line(str(v))}" for k, v in sorted(tags.items()))


async def cmd_tags(args: argparse.Namespace) -> int:
    """Change this node's tags (``--set``, ``--delete``) and print them."""
    add = _pairs(args.set, "--set")
    for key in args.delete:
        if key in add:
            raise ConfigError(f"--delete {key}: it is also given to --set")
    async with await open_client(args.socket, server_user=args.server_user) as client:
        tags = await client.set_tags(add, args.delete)
    if args.json:
        print(json.dumps(tags, indent=2))
    elif tags:
        print("\n".join(f"{k}={one_line(v)}" for k, v in sorted(tags.items())))
    else:
        print("no tags")
    return 0
