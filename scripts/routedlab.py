"""A lab of several subnets joined by a router, on one machine (network namespaces).

Layout (``prefix`` defaults to ``p2prt``), for ``subnets`` S and ``per_subnet`` M::

    <prefix>-sw   the router: one bridge brK per subnet K (multicast snooping off) with
                  the router's address <base>.K.254/24 on it, IPv4 forwarding on
    <prefix>-hN   host N (h1..h{S*M}): eth0 on the bridge of its subnet, address
                  <base>.K.J (J-th host of subnet K), default route via the router

Hosts h1..hM are in subnet 1, the next M in subnet 2, and so on. Multicast (mDNS)
does not cross the router: nodes in different subnets find each other only through
addresses they are given (``--peer``) or learn (membership). Everything else is
``scripts/netlab.py``'s ``Lab`` (node processes, signals, cleanup on any failure),
with per-host node arguments (``host_args``) on top. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

try:
    from scripts.netlab import NODE_PORT, Lab, LabError, _ip, environment_problem
except ImportError:  # run beside netlab.py (scripts/ on sys.path, as lab.py does)
    from netlab import NODE_PORT, Lab, LabError, _ip, environment_problem  # type: ignore[no-redef]

DEFAULT_BASE: Final = "10.78"


class RoutedLab(Lab):
    """``subnets`` x ``per_subnet`` hosts, a subnet per bridge, one router between them.

    Args:
        base: the first two octets of the addresses (``"10.78"``: 10.78.K.J).
        host_args: extra ``p2pnode run`` arguments per host (``{"h1": ["--peer", ...]}``),
            after ``node_args``.
        Others as ``Lab``.
    """

    def __init__(self, subnets: int = 3, per_subnet: int = 3, *, prefix: str = "p2prt",
                 base: str = DEFAULT_BASE, node_args: list[str] | tuple[str, ...] = (),
                 host_args: dict[str, list[str]] | None = None,
                 lab_dir: Path | str | None = None, start_nodes: bool = True) -> None:
        if not re.fullmatch(r"(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)", base):
            raise LabError(f"bad base {base!r}: two octets, such as 10.78")
        if not (1 <= subnets <= 250 and 1 <= per_subnet <= 250):
            raise LabError(f"{subnets} subnets of {per_subnet} hosts: each 1-250")
        super().__init__(subnets * per_subnet, prefix=prefix, subnet=f"{base}.0.0/16",
                         node_args=node_args, lab_dir=lab_dir, start_nodes=start_nodes)
        self.base = base
        self.subnets = subnets
        self.per_subnet = per_subnet
        self.host_args = dict(host_args or {})

    # -- names and places --------------------------------------------------------------

    def subnet_of(self, host: str | int) -> int:
        """The subnet (1..S) of ``host``."""
        return (int(self.host(host)[1:]) - 1) // self.per_subnet + 1

    def hosts_in(self, subnet: int) -> list[str]:
        """The hosts of subnet ``subnet`` (1..S)."""
        return [h for h in self.host_names if self.subnet_of(h) == subnet]

    def addr(self, host: str | int) -> str:
        number = int(self.host(host)[1:])
        return f"{self.base}.{self.subnet_of(host)}.{(number - 1) % self.per_subnet + 1}"

    def router_addr(self, subnet: int) -> str:
        """The router's address in subnet ``subnet`` (the hosts' gateway)."""
        return f"{self.base}.{subnet}.254"

    def node_addr(self, host: str | int) -> str:
        """``HOST:PORT`` of ``host``'s node, as another node's ``--peer``."""
        return f"{self.addr(host)}:{NODE_PORT}"

    def node_command(self, host: str | int) -> list[str]:
        return [*super().node_command(host), *self.host_args.get(self.host(host), [])]

    # -- building ----------------------------------------------------------------------

    def _build_switch(self) -> None:
        sw = self.switch_netns
        _ip("netns", "add", sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        done = subprocess.run(["ip", "netns", "exec", sw, "sysctl", "-qw",
                               "net.ipv4.ip_forward=1"], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise LabError(f"cannot turn on forwarding in {sw}: {done.stderr.strip()}")
        for k in range(1, self.subnets + 1):
            bridge = f"br{k}"
            _ip("-n", sw, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            _ip("-n", sw, "addr", "add", f"{self.router_addr(k)}/24", "dev", bridge)
            _ip("-n", sw, "link", "set", bridge, "up")

    def bridge_of(self, host: str) -> str:
        return f"br{self.subnet_of(host)}"

    @property
    def host_prefixlen(self) -> int:
        return 24

    def _build_host(self, name: str) -> None:
        super()._build_host(name)
        _ip("-n", self.netns(name), "route", "add", "default", "via",
            self.router_addr(self.subnet_of(name)))


# -- environment -------------------------------------------------------------------------


def netns_problem() -> str | None:
    """Why namespaces cannot be made here (``environment_problem``, or ``ip netns add``
    failing: a container without CAP_SYS_ADMIN), or ``None``."""
    problem = environment_problem()
    if problem is not None:
        return problem
    probe = f"p2pprobe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


# -- a slow node: CPU throttling ---------------------------------------------------------


def _cgroup_dirs(pid: int) -> tuple[Path, Path, str] | None:
    """Where to throttle ``pid``: (the cgroup it is in, a parent to make a child in, the
    version "v2" or "v1"), from the cpu controller's mount; None if none is writable."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    for mount in mounts:
        _, where, kind, options = mount.split()[:4]
        root = Path(where)
        if kind == "cgroup2" and "" in paths:
            here = root / paths[""].lstrip("/")
            if "cpu" in (root / "cgroup.controllers").read_text().split() and os.access(
                    root, os.W_OK):
                return here, root, "v2"
        elif kind == "cgroup" and "cpu" in options.split(",") and "cpu" in paths:
            if os.access(root, os.W_OK):
                return root / paths["cpu"].lstrip("/"), root, "v1"
    return None


@contextlib.contextmanager
def cpu_throttle(pid: int, share: float = 0.05, period_us: int = 100_000) -> Iterator[str]:
    """Let process ``pid`` (all its threads) use at most ``share`` of one CPU while the
    block runs; yields how: ``"cgroup v2"`` (cpu.max), ``"cgroup v1"`` (cfs quota), or
    ``"SIGSTOP bursts"`` (stopped, then continued for ``share`` of every period) where
    no cpu cgroup can be written. The process is put back (and continued) on exit,
    also on errors."""
    quota = max(1000, int(period_us * share))
    found = _cgroup_dirs(pid)
    if found is None:
        with _stop_bursts(pid, share, period_us / 1e6):
            yield "SIGSTOP bursts"
        return
    here, root, version = found
    group = root / f"p2plab-throttle-{pid}"
    group.mkdir(exist_ok=True)
    try:
        if version == "v2":
            (group / "cpu.max").write_text(f"{quota} {period_us}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        try:
            yield f"cgroup {version}"
        finally:
            with contextlib.suppress(OSError):
                # Lift the quota first: a task moved out while its group is throttled
                # can stay off the CPU (seen with cgroup v1: no CPU for 0.5 s after).
                if version == "v2":
                    (group / "cpu.max").write_text(f"max {period_us}")
                else:
                    (group / "cpu.cfs_quota_us").write_text("-1")
            with contextlib.suppress(OSError):  # gone already: nothing to put back
                (here / "cgroup.procs").write_text(str(pid))
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


@contextlib.contextmanager
def _stop_bursts(pid: int, share: float, period: float) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        with contextlib.suppress(ProcessLookupError):
            while not stop.is_set():
                os.kill(pid, signal.SIGSTOP)
                if stop.wait(period * (1 - share)):
                    break
                os.kill(pid, signal.SIGCONT)
                stop.wait(period * share)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
