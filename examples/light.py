#!/usr/bin/env python3
"""A light that other programs switch by request/reply (see examples/switch.py).

    python3 examples/light.py --name kitchen      # serves topic lights/kitchen, until Ctrl-C

It answers the requests on its topic: "on", "off", "toggle" and "status" with the
light's state ("kitchen light is on"); anything else with an error reply, which the
asker sees as an error. Replace ``switch`` below with code that drives a real lamp.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from p2pnode.client import ReplyError, open_asyncio_client


class Light:
    def __init__(self, name: str) -> None:
        self.name = name
        self.on = False

    async def switch(self, data: bytes) -> str:
        """The request handler: the request's data in, the reply out."""
        command = data.decode("utf-8", "replace").strip()
        if command in ("on", "off"):
            self.on = command == "on"
        elif command == "toggle":
            self.on = not self.on
        elif command != "status":
            raise ReplyError(f"unknown command {command!r}: say on, off, toggle or status")
        return f"{self.name} light is {'on' if self.on else 'off'}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="kitchen")
    parser.add_argument("--socket", default=None)
    args = parser.parse_args()
    light = Light(args.name)
    async with open_asyncio_client(args.socket) as node:
        topic = f"lights/{args.name}"
        await node.subscribe([topic])  # serve subscribes too; this says when it has
        print(f"light {args.name} serving {topic}", file=sys.stderr, flush=True)
        await node.serve(topic, light.switch)  # until the node closes the connection


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
