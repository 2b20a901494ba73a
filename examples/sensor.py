#!/usr/bin/env python3
"""A sensor: publish a reading every few seconds, as JSON on the topic "sensors".

    python3 examples/sensor.py --name kitchen --interval 5
    python3 examples/sensor.py --name test --count 3 --interval 0

Each reading: {"sensor": NAME, "seq": N, "time": UNIX_TIME, "load1": LOAD,
"temp_c": CELSIUS or null}: the machine's 1-minute load average and, where the
kernel has one, the first thermal zone's temperature. Uses the blocking client.
`examples/collector.py` prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from p2pnode.client import BlockingClient

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def reading(name: str, seq: int) -> dict[str, object]:
    try:
        temp: float | None = int(THERMAL.read_text()) / 1000
    except (OSError, ValueError):
        temp = None
    return {"sensor": name, "seq": seq, "time": round(time.time(), 3),
            "load1": os.getloadavg()[0], "temp_c": temp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=os.uname().nodename)
    parser.add_argument("--topic", default="sensors")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--count", type=int, default=None, help="stop after N readings")
    parser.add_argument("--socket", default=None)
    args = parser.parse_args()
    with BlockingClient(args.socket) as node:
        seq = 0
        while args.count is None or seq < args.count:
            seq += 1
            node.publish(args.topic, json.dumps(reading(args.name, seq)))
            if args.count is None or seq < args.count:
                time.sleep(args.interval)
    print(f"sensor {args.name}: published {seq} readings")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
