#!/usr/bin/env python3
"""A switch: ask a light (examples/light.py) to change, and print its answer.

    python3 examples/switch.py kitchen on         # or off, toggle, status

Sends the command as a request on topic lights/NAME and prints each light's answer,
with the node it runs on: "kitchen light is on (node b)". Exit status 1 when no light
answered within --timeout seconds, or it answered with an error.
"""

from __future__ import annotations

import argparse
import sys

from p2pnode.client import BlockingClient, event_payload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("light")
    parser.add_argument("command", help="on, off, toggle or status")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--socket", default=None)
    args = parser.parse_args()
    with BlockingClient(args.socket) as node:
        replies = node.ask(f"lights/{args.light}", args.command, timeout=args.timeout)
    if not replies:
        print(f"no light {args.light!r} answered within {args.timeout:g}s", file=sys.stderr)
        return 1
    for reply in replies:
        if "error" in reply:
            print(f"error from node {reply['name']}: {reply['error']}", file=sys.stderr)
            return 1
        print(f"{event_payload(reply).decode()} (node {reply['name']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
