#!/usr/bin/env python3
"""A soak of a mesh under restarts and link flaps: is anything lost, duplicated or
reordered? (issue 17; docs/store.md, "Soak").

    sudo .venv/bin/python scripts/soak.py [--hosts 8] [--publishers 3] [--rate 200]
        [--seconds 300] [--kill-interval 20] [--flap-interval 30] [--flap-down 5]
        [--resubscribe-delay 0] [--json]

It builds a lab of ``--hosts`` hosts in network namespaces (scripts/netlab.py; mDNS
only inside them), one node each, and runs on every host a subscriber app
(``soak_apps.py sub``: topic ``soak/#``) and on the first ``--publishers`` hosts a
publisher app (``soak_apps.py pub``: ``--rate`` numbered messages a second,
pipelined, each confirmed by the node or recorded as unknown). Every
``--kill-interval`` seconds one node (h<N>, h<N-1>, ... in turn) is SIGKILLed and
started again; every ``--flap-interval`` seconds one host's link (h1, h2, ... in
turn) goes down for ``--flap-down`` seconds. A subscriber whose node went away waits
until it is back, then ``--resubscribe-delay`` seconds, then subscribes again with
``since`` the last msg_id it got. After ``--seconds`` the publishers stop, every link
is up and every node runs, and the soak waits (at most ``--drain`` seconds) until
every subscriber has every message, then counts (scripts/soak_report.py says how):
published, deliveries expected and got, lost, duplicates (after a restart / other),
out of order, catch-up after each restart.

Exit status: 0 if nothing was lost, no subscriber got a message again after its
node restarted and per-publisher order held; 1 if not; 2 if the soak could not run.
The lab is destroyed at the end, also on errors and Ctrl-C; the records
(``hK/soak-sub.tsv``, ``soak-pub.tsv``), node logs and stores stay in ``--lab-dir``
(a new or empty directory; default: a new one, /tmp/PREFIX-XXXXXXXX).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # p2pnode from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # netlab, beside this script

from netlab import Lab, environment_problem
from soak_report import (
    Published,
    Restart,
    account,
    format_text,
    passes,
    read_publisher,
    read_subscriber,
    received_keys,
)

from p2pnode.client import BlockingClient
from p2pnode.config import NodeConfig
from p2pnode.errors import P2PError

APPS = Path(__file__).resolve().parent / "soak_apps.py"
READY_TIMEOUT = 60.0  # seconds a (re)started node has to serve its socket
SETUP_TIMEOUT = 60.0  # seconds for the mesh to form and the subscribers to subscribe
EXIT_TIMEOUT = 10.0  # seconds an app or a killed node has to exit
POLL = 0.2  # seconds between looks at processes and records


class SoakError(Exception):
    """The soak cannot go on (an app died, a node did not come back...)."""


@dataclasses.dataclass
class Settings:
    hosts: int = 8
    publishers: int = 3
    rate: float = 200.0
    seconds: float = 300.0
    kill_interval: float = 20.0
    flap_interval: float = 30.0
    flap_down: float = 5.0
    resubscribe_delay: float = 0.0
    drain: float = 60.0
    size: int = 64
    prefix: str = "p2psoak"
    subnet: str = "10.78.0.0/24"
    lab_dir: Path | None = None
    node_args: tuple[str, ...] = ()

    def check(self) -> None:
        if not 1 <= self.hosts <= 200:
            raise SoakError("--hosts must be 1..200")
        if not 1 <= self.publishers <= self.hosts:
            raise SoakError("--publishers must be 1..hosts")
        if not 0 < self.rate <= 10_000:
            raise SoakError("--rate must be in (0, 10000]")
        if not 0 < self.seconds <= 86_400:
            raise SoakError("--seconds must be in (0, 86400]")
        if self.kill_interval < 0 or self.flap_interval < 0:
            raise SoakError("--kill-interval and --flap-interval must be >= 0 (0: none)")
        if self.flap_interval and not 0 < self.flap_down < self.flap_interval:
            raise SoakError("--flap-down must be > 0 and shorter than --flap-interval")
        if not 0 <= self.resubscribe_delay <= 600 or not 0 < self.drain <= 3600:
            raise SoakError("--resubscribe-delay must be 0..600, --drain in (0, 3600]")
        if not 16 <= self.size <= 60_000:
            raise SoakError("--size must be 16..60000")


class Soak:
    """One run: the lab, the apps, the schedule of kills and flaps, and the records."""

    def __init__(self, settings: Settings, lab: Lab) -> None:
        self.s = settings
        self.lab = lab
        self.pubs: dict[int, subprocess.Popen[bytes]] = {}
        self.subs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: list[Restart] = []
        self.flaps: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.publishing = True
        self.token = secrets.token_hex(4)

    def record(self, host: str, role: str) -> Path:
        return self.lab.host_dir(host) / f"soak-{role}.tsv"

    # -- start -----------------------------------------------------------------------

    def start_app(self, host: str, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        path = self.record(host, role)
        path.unlink(missing_ok=True)
        with (self.lab.host_dir(host) / f"soak-{role}.log").open("ab") as out:
            return self.lab.popen(host, [
                sys.executable, str(APPS), role, "--log", str(path),
                "--socket", str(self.lab.socket_path(host)),
                "--max-seconds", str(self.s.seconds + self.s.drain + 3 * SETUP_TIMEOUT),
                "--run", self.token,
                *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def setup(self) -> None:
        """Nodes up and linked to each other, subscribers subscribed, publishers on."""
        hosts = self.lab.host_names
        for host in hosts:
            self.lab.start_node(host, ready_timeout=READY_TIMEOUT)
        self.wait_mesh()
        for host in hosts:
            self.subs[host] = self.start_app(host, "sub", [
                "--resubscribe-delay", str(self.s.resubscribe_delay)])
        deadline = time.monotonic() + SETUP_TIMEOUT
        for host in hosts:
            while not self.record(host, "sub").exists() or not any(
                    line.startswith("S\t0\t")
                    for line in self.record(host, "sub").read_text().splitlines()):
                self.check_apps()
                if time.monotonic() > deadline:
                    raise SoakError(f"{host}: the subscriber did not subscribe in time")
                time.sleep(POLL / 4)
        self.t0 = time.monotonic()
        for i in range(1, self.s.publishers + 1):
            self.pubs[i] = self.start_app(f"h{i}", "pub", [
                "--index", str(i), "--rate", str(self.s.rate), "--size", str(self.s.size)])

    def wait_mesh(self) -> None:
        """Until every node has ``degree_low`` peers (or all) and the mesh is connected."""
        hosts = self.lab.host_names
        want = min(len(hosts) - 1, NodeConfig().degree_low)
        deadline = time.monotonic() + SETUP_TIMEOUT
        while True:
            links: dict[str, set[str]] = {}
            for host in hosts:
                with BlockingClient(self.lab.socket_path(host), timeout=SETUP_TIMEOUT) as c:
                    me = str(c.status()["node_id"])
                    links[me] = {str(p["node_id"]) for p in c.peers()}
            reached, todo = set(), [next(iter(links))]
            while todo:
                node = todo.pop()
                if node not in reached:
                    reached.add(node)
                    todo.extend(links.get(node, ()))
            if reached >= links.keys() and all(len(p) >= want for p in links.values()):
                return
            if time.monotonic() > deadline:
                raise SoakError(f"the mesh did not form in {SETUP_TIMEOUT} s: {links}")
            time.sleep(POLL * 2)

    def check_apps(self) -> None:
        apps = [*self.subs.items(), *(self.pubs.items() if self.publishing else [])]
        for name, proc in apps:
            if proc.poll() is not None:
                raise SoakError(f"app {name} exited with {proc.returncode} (see its "
                                "soak-*.log in the lab directory)")

    # -- the run ---------------------------------------------------------------------

    def schedule(self) -> list[tuple[float, int, str, str]]:
        """(time, order, action, host) of every kill and flap, by time."""
        hosts, s, events = self.lab.host_names, self.s, []
        for interval, action in ((s.kill_interval, "kill"), (s.flap_interval, "flap")):
            k = 1
            while interval and k * interval < s.seconds:
                turn = (k - 1) % len(hosts)
                host = hosts[-1 - turn] if action == "kill" else hosts[turn]
                events.append((self.t0 + k * interval, len(events), action, host))
                k += 1
        heapq.heapify(events)
        return events

    def kill_and_restart(self, host: str) -> None:
        killed = time.monotonic()
        self.lab.signal(host, signal.SIGKILL)
        deadline = killed + EXIT_TIMEOUT
        while self.lab.node_pid(host) is not None:
            if time.monotonic() > deadline:
                raise SoakError(f"{host}: the node did not die of SIGKILL")
            time.sleep(0.01)
        self.lab.start_node(host, ready_timeout=READY_TIMEOUT)
        self.restarts.append(Restart(host, killed, time.monotonic()))

    def run(self) -> None:
        events = self.schedule()
        end = self.t0 + self.s.seconds
        for _ in range(int((self.s.seconds + 3600) / POLL)):  # bounded: ends at `end`
            now = time.monotonic()
            if now >= end and not any(e[2] == "up" for e in events):
                return
            if events and events[0][0] <= now:
                _, order, action, host = heapq.heappop(events)
                if action == "kill":
                    self.kill_and_restart(host)
                elif action == "flap":
                    self.lab.link_down(host)
                    self.flaps.append({"host": host, "at_s": round(now - self.t0, 2)})
                    heapq.heappush(events, (now + self.s.flap_down, order, "up", host))
                else:
                    self.lab.link_up(host)
                continue
            self.check_apps()
            wake = min(end, events[0][0] if events else end)
            time.sleep(max(0.0, min(POLL, wake - now)))
        raise SoakError("the run did not end in time")

    # -- the end ---------------------------------------------------------------------

    def stop_publishers(self) -> Published:
        self.publishing = False
        for proc in self.pubs.values():
            proc.send_signal(signal.SIGTERM)
        for i, proc in self.pubs.items():
            try:
                proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(EXIT_TIMEOUT)
                raise SoakError(f"publisher {i} did not stop") from None
        published = Published()
        for i in self.pubs:
            read_publisher(i, self.record(f"h{i}", "pub"), published)
        return published

    def drain(self, published: Published) -> float:
        """Wait until every subscriber has every message (bounded); return how long."""
        start = time.monotonic()
        got = {h: set[tuple[int, int]]() for h in self.subs}
        offsets = dict.fromkeys(self.subs, 0)
        wanted = set(published.ok)
        while time.monotonic() - start < self.s.drain:
            for host in self.subs:
                offsets[host] = received_keys(self.record(host, "sub"), offsets[host],
                                              got[host])
            if all(wanted <= keys for keys in got.values()):
                break
            self.check_apps()
            time.sleep(POLL)
        return time.monotonic() - start

    def stop_apps(self) -> None:
        """SIGTERM to every app still running, SIGKILL to those that do not exit."""
        procs = [p for p in [*self.pubs.values(), *self.subs.values()] if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(EXIT_TIMEOUT)

    def finish(self) -> dict[str, Any]:
        published = self.stop_publishers()
        drained = self.drain(published)
        self.stop_apps()
        subs = [read_subscriber(h, self.record(h, "sub")) for h in self.subs]
        figures = account(published, subs, self.restarts, self.t0,
                          {i: f"h{i}" for i in self.pubs})
        figures["drain_s"] = round(drained, 2)
        figures["t0_monotonic"] = self.t0
        figures["published_per_s"] = round(figures["published"] / self.s.seconds, 1)
        figures["flaps"] = self.flaps
        figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        return figures


def run_soak(settings: Settings) -> dict[str, Any]:
    """Run a soak; return its result (``figures``, ``passes``, ``settings``).
    Raises ``SoakError`` or ``LabError`` if it cannot run."""
    settings.check()
    problem = environment_problem()
    if problem:
        raise SoakError(problem)
    if settings.lab_dir is None:
        settings.lab_dir = Path(tempfile.mkdtemp(prefix=f"{settings.prefix}-"))
    elif settings.lab_dir.exists() and any(settings.lab_dir.iterdir()):
        raise SoakError(f"--lab-dir {settings.lab_dir} is not empty: its nodes' stores "
                        "would take part; give a new or empty directory")
    lab = Lab(settings.hosts, prefix=settings.prefix, subnet=settings.subnet,
              lab_dir=settings.lab_dir, node_args=list(settings.node_args),
              start_nodes=False)
    with lab:
        soak = Soak(settings, lab)
        try:
            soak.setup()
            soak.run()
            figures = soak.finish()
        finally:
            soak.stop_apps()
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in dataclasses.asdict(settings).items()},
              "figures": figures, "passes": passes(figures)}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    add = parser.add_argument
    add("--hosts", type=int, default=d.hosts)
    add("--publishers", type=int, default=d.publishers)
    add("--rate", type=float, default=d.rate, help="messages a second, per publisher")
    add("--seconds", type=float, default=d.seconds, help="how long the publishers run")
    add("--kill-interval", type=float, default=d.kill_interval, help="0: no kills")
    add("--flap-interval", type=float, default=d.flap_interval, help="0: no flaps")
    add("--flap-down", type=float, default=d.flap_down, help="seconds a flapped link is down")
    add("--resubscribe-delay", type=float, default=d.resubscribe_delay, metavar="SECONDS",
        help="how long a subscriber waits after its node is back before it resubscribes")
    add("--drain", type=float, default=d.drain,
        help="at most this long for the last messages to arrive after the run")
    add("--size", type=int, default=d.size, help="payload bytes")
    add("--prefix", default=d.prefix, help="namespace name prefix")
    add("--subnet", default=d.subnet)
    add("--lab-dir", type=Path, default=None,
        help="a new or empty directory for the records, logs and stores "
             "(default: a new /tmp/PREFIX-XXXXXXXX)")
    add("--node-args", default="", help="extra 'p2pnode run' arguments")
    add("--json", action="store_true", help="print the result as JSON")
    return parser


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(
        hosts=args.hosts, publishers=args.publishers, rate=args.rate, seconds=args.seconds,
        kill_interval=args.kill_interval, flap_interval=args.flap_interval,
        flap_down=args.flap_down, resubscribe_delay=args.resubscribe_delay,
        drain=args.drain, size=args.size, prefix=args.prefix, subnet=args.subnet,
        lab_dir=args.lab_dir, node_args=tuple(shlex.split(args.node_args)))
    signal.signal(signal.SIGTERM, _interrupt)  # cleaned up like Ctrl-C
    try:
        result = run_soak(settings)
    except (SoakError, P2PError, OSError) as err:  # LabError is a P2PError
        print(f"soak.py: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak.py: interrupted; the lab is destroyed", file=sys.stderr)
        return 130
    result["command"] = shlex.join(["soak.py", *(sys.argv[1:] if argv is None else argv)])
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
