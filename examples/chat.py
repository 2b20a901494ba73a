#!/usr/bin/env python3
"""A terminal chat between machines: every line you type goes to everyone in the room.

Run a node on each machine (`p2pnode run`), then on each:

    python3 examples/chat.py --nick alice            # type lines; Ctrl-D to leave

Messages are plain text, "NICK: TEXT", on the topic "chat" (--room to change it), so
`p2pnode send --topic chat` and `p2pnode recv --topic chat` can join in. Uses the
async (trio) client, with two connections to the node: one to publish, one to listen.
"""

from __future__ import annotations

import argparse
import os
import sys

import trio

from p2pnode.client import Client, event_payload, open_client


async def show(listener: Client, me: str, nick: str) -> None:
    """Print what others say (our own lines come back too: they are skipped)."""
    async for event in listener.events():
        if event["event"] == "dropped":
            print(f"* ({event['count']} messages missed)", flush=True)
            continue
        text = event_payload(event).decode("utf-8", "replace")
        if event["origin"] != me or not text.startswith(f"{nick}: "):
            print(text, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nick", default=os.environ.get("USER", "someone"))
    parser.add_argument("--room", default="chat", help="the topic (default chat)")
    parser.add_argument("--socket", default=None, help="the node's socket (default: "
                        "$P2PNODE_SOCKET or the per-user path)")
    args = parser.parse_args()
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with await open_client(args.socket) as listener, \
            await open_client(args.socket) as talker, stdin:
        me = (await listener.status())["node_id"]
        await listener.subscribe([args.room])
        print(f"* {args.nick} joined {args.room}; type lines, Ctrl-D to leave",
              file=sys.stderr, flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, listener, me, args.nick)
            buf = b""
            while data := await stdin.receive_some(4096):
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace").strip()
                    if text:
                        await talker.publish(args.room, f"{args.nick}: {text}")
            nursery.cancel_scope.cancel()
        print(f"* {args.nick} left", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
