#!/usr/bin/env python3
"""Who is online: apps announce themselves, watchers see the current state at once.

Run a node on each machine (`p2pnode run`), then:

    python3 examples/presence.py --name kitchen      # this app is online until it ends
    python3 examples/presence.py --watch             # prints who is online, and changes

An app's state is the retained message of the topic "presence/NAME": "online" while
it runs. It sets a last will, "offline" (retained too), which its node publishes if
the app dies without closing its connection (a crash, kill -9); when it ends normally
(Ctrl-D or Ctrl-C) it says "offline" itself. A watcher that starts later gets every
app's current state first (marked "[retained]"), then the changes as they happen. Uses
the async (trio) client.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from p2pnode.client import Client, event_payload, open_client

PREFIX = "presence/"


async def announce(node: Client, name: str) -> None:
    """Online until standard input ends (or Ctrl-C); offline after, whatever happens."""
    topic = PREFIX + name
    await node.set_will(topic, "offline", retain=True)  # if this process dies
    await node.publish(topic, "online", retain=True, wait=True)
    print(f"{name} is online; Ctrl-D to leave", file=sys.stderr, flush=True)
    try:
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            while await stdin.receive_some(4096):
                pass
    finally:
        with trio.CancelScope(shield=True):  # Ctrl-C: still say it
            await node.publish(topic, "offline", retain=True, wait=True)
    print(f"{name} is offline", file=sys.stderr, flush=True)


async def watch(node: Client, count: int | None) -> None:
    """Print each app's state: the current ones first, then every change."""
    # Every topic, filtered here (a node that knows wildcards could take "presence/#").
    reply = await node.subscribe([])
    print(f"watching presence ({reply.get('retained', 0)} states known)", file=sys.stderr,
          flush=True)
    printed = 0
    async for event in node.events():
        if event["event"] != "message" or not event["topic"].startswith(PREFIX):
            continue
        state = event_payload(event).decode("utf-8", "replace") or "unknown"
        mark = " [retained]" if event.get("retained") else ""
        print(f"{event['topic'][len(PREFIX):]}: {state}{mark}", flush=True)
        printed += 1
        if count is not None and printed >= count:
            return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--name", help="announce this app as NAME")
    mode.add_argument("--watch", action="store_true", help="print who is online")
    parser.add_argument("--count", type=int, default=None, help="--watch: exit after N lines")
    parser.add_argument("--socket", default=None, help="the node's socket (default: "
                        "$P2PNODE_SOCKET or the per-user path)")
    args = parser.parse_args()
    async with await open_client(args.socket) as node:
        if args.watch:
            await watch(node, args.count)
        else:
            await announce(node, args.name)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(130)
