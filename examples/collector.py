#!/usr/bin/env python3
"""A collector: print the readings that sensors (examples/sensor.py) publish.

    python3 examples/collector.py                 # until Ctrl-C
    python3 examples/collector.py --count 3       # exit after 3 readings

Prints one line per reading: "kitchen #3 load1=0.52 temp=41.0C" (the temperature
only where the sensor has one). Readings that are not JSON are shown as they are.
"""

from __future__ import annotations

import argparse
import json
import sys

from p2pnode.client import BlockingClient, event_payload


def describe(payload: bytes) -> str:
    try:
        r = json.loads(payload)
        line = f"{r['sensor']} #{r['seq']} load1={r['load1']:.2f}"
        return line + (f" temp={r['temp_c']:.1f}C" if r.get("temp_c") is not None else "")
    except (ValueError, KeyError, TypeError):
        return f"(not a reading) {payload.decode('utf-8', 'replace')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="sensors")
    parser.add_argument("--count", type=int, default=None, help="exit after N readings")
    parser.add_argument("--socket", default=None)
    args = parser.parse_args()
    with BlockingClient(args.socket, timeout=None) as node:
        node.subscribe([args.topic])
        print(f"collecting {args.topic}", file=sys.stderr, flush=True)
        seen = 0
        for event in node.events():
            if event["event"] == "dropped":
                print(f"({event['count']} readings missed)", flush=True)
                continue
            print(describe(event_payload(event)), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
