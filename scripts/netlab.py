"""A lab of N hosts on one machine: Linux network namespaces joined by a bridge.

Layout (``prefix`` defaults to ``p2plab``)::

    <prefix>-sw   the switch: bridge br0 (multicast snooping off), one port hK per host
    <prefix>-hK   host K: lo, and eth0 (the other end of port hK) with <subnet>.K

Everything is created inside these namespaces: nothing is added to, or sent on, the
root namespace's interfaces. Each host runs one node (``p2pnode run``, or the command
given as ``node_cmd``) with its files in ``<lab_dir>/hK/`` (``node.sock``, ``data/``,
``node.log``). The lab's state (hosts, addresses, node pids) is kept in
``<lab_dir>/state.json`` so the ``scripts/lab.py`` command line can act on a lab
created earlier. Needs root and iproute2 (``environment_problem()`` says what is
missing). Processes are only ever signalled by the pid recorded when the lab started
them, after checking that pid still names the same process.

Usage from tests::

    with Lab(hosts=3, lab_dir=tmp_path, node_args=["--no-mdns"]) as lab:
        lab.exec("h1", ["p2pnode", "peers"])
        lab.link_down("h2")
        assert not lab.ping("h1", "h2")
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from p2pnode.errors import LocalError

DEFAULT_PREFIX: Final = "p2plab"
DEFAULT_SUBNET: Final = "10.77.0.0/24"
NODE_PORT: Final = 7420
#: Seconds a node gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 5.0
STATE_FILE: Final = "state.json"
_BRIDGE: Final = "br0"
_HOST_IF: Final = "eth0"

#: Sends one ICMP echo request (raw socket, so no ``ping`` binary is needed); exit 0 on reply.
_PING_SCRIPT: Final = """
import os, socket, struct, sys, time
dst, timeout = sys.argv[1], float(sys.argv[2])
ident = os.getpid() & 0xFFFF
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
body = b"p2plab00"
head = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
packet = struct.pack("!BBHHH", 8, 0, csum(head + body), ident, 1) + body
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
try:
    sock.sendto(packet, (dst, 0))
except OSError:
    sys.exit(1)
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    sock.settimeout(left)
    try:
        data, (src, _) = sock.recvfrom(2048)
    except OSError:
        break
    ihl = (data[0] & 0xF) * 4
    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if kind == 0 and rid == ident and src == dst:
        sys.exit(0)
sys.exit(1)
"""


class LabError(LocalError):
    """The lab cannot do what was asked (missing tools, bad host, command failed)."""


def environment_problem() -> str | None:
    """Return why a lab cannot run here (not root, no iproute2), or ``None`` if it can."""
    if sys.platform != "linux":
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root (it creates network namespaces): run it with sudo"
    if shutil.which("ip") is None:
        return "the lab needs iproute2 (the 'ip' command)"
    return None


def list_netns() -> list[str]:
    """Names of the network namespaces that ``ip netns`` knows."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raise ``LabError`` with its message if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), ``None`` if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


def _wait_exec(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Wait until ``ip netns exec`` has entered the namespace and exec'd the command.

    Until then the pid still runs ``ip`` in the root namespace. Bounded polling of
    ``/proc/PID/exe`` and ``/proc/PID/cmdline``: during ``execve`` the new ``exe``
    shows a moment before the new command line does (it reads empty), so both must
    have changed. Returns early if the process exits.
    """
    ip_binary = shutil.which("ip")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            exe = os.readlink(f"/proc/{proc.pid}/exe")
            argv0 = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return
        if (ip_binary is None or exe != os.path.realpath(ip_binary)) and argv0 and (
                os.path.basename(argv0) != b"ip"):
            return
        time.sleep(0.005)


def _wait_ready(sock: socket.socket, name: str) -> None:
    """Block until a ``READY=1`` notification arrives on ``sock`` (its timeout applies)."""
    try:
        while b"READY=1" not in sock.recv(4096).split(b"\n"):
            pass
    except TimeoutError:
        raise LabError(f"{name}: the node did not report ready in time") from None


@dataclasses.dataclass
class _Node:
    """The node process of one host: its pid and start time (to recognise it again)."""

    pid: int
    started: int | None
    proc: subprocess.Popen[bytes] | None = None  # only in the process that started it


class Lab:
    """N hosts in network namespaces behind one bridge, each running a node.

    Args:
        hosts: number of hosts (h1..hN), at most the subnet's size minus 2.
        prefix: namespace name prefix; two labs need different prefixes and subnets.
        subnet: IPv4 subnet; host K gets its K-th address.
        node_args: extra arguments appended to ``p2pnode run ...``.
        node_cmd: replaces the whole node command (e.g. a stand-in for tests); it gets
            ``P2PNODE_SOCKET``, ``P2PLAB_HOST``, ``P2PLAB_ADDR``, ``P2PLAB_DIR`` in its env.
        lab_dir: where the state file and per-host files go; default ``/tmp/p2plab-<prefix>``.
        start_nodes: start a node on every host in ``create()``.

    As a context manager it creates the lab on entry and always destroys it on exit
    (also on exceptions and ``KeyboardInterrupt``). Raises ``LabError``.
    """

    def __init__(
        self,
        hosts: int = 3,
        *,
        prefix: str = DEFAULT_PREFIX,
        subnet: str = DEFAULT_SUBNET,
        node_args: list[str] | tuple[str, ...] = (),
        node_cmd: list[str] | tuple[str, ...] | None = None,
        lab_dir: Path | str | None = None,
        start_nodes: bool = True,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", prefix):
            raise LabError(f"bad prefix {prefix!r}: letters, digits, '_.-', at most 31")
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise LabError(f"bad subnet {subnet!r}: {exc}") from None
        if not 0 <= hosts <= self.subnet.num_addresses - 2:
            raise LabError(f"{hosts} hosts do not fit in {subnet}")
        self.hosts = hosts
        self.prefix = prefix
        self.node_args = list(node_args)
        self.node_cmd = list(node_cmd) if node_cmd is not None else None
        self.lab_dir = Path(lab_dir) if lab_dir is not None else Path(f"/tmp/p2plab-{prefix}")
        self.start_nodes = start_nodes
        self._nodes: dict[str, _Node] = {}

    # -- names and places --------------------------------------------------------------

    @property
    def host_names(self) -> list[str]:
        """``["h1", ..., "hN"]``."""
        return [f"h{k}" for k in range(1, self.hosts + 1)]

    @property
    def switch_netns(self) -> str:
        return f"{self.prefix}-sw"

    def host(self, host: str | int) -> str:
        """Normalise ``"h3"``, ``"3"`` or ``3`` to ``"h3"``; raise ``LabError`` if unknown."""
        text = str(host)
        name = text if text.startswith("h") else f"h{text}"
        if name not in self.host_names:
            raise LabError(f"no host {host!r} in this lab (hosts: h1..h{self.hosts})")
        return name

    def netns(self, host: str | int) -> str:
        """The network namespace of ``host``."""
        return f"{self.prefix}-{self.host(host)}"

    def addr(self, host: str | int) -> str:
        """The IPv4 address of ``host`` in the lab (the subnet's K-th address)."""
        return str(self.subnet[int(self.host(host)[1:])])

    def host_dir(self, host: str | int) -> Path:
        return self.lab_dir / self.host(host)

    def socket_path(self, host: str | int) -> Path:
        """The node's local API socket on ``host``."""
        return self.host_dir(host) / "node.sock"

    def log_path(self, host: str | int) -> Path:
        return self.host_dir(host) / "node.log"

    def env(self, host: str | int) -> dict[str, str]:
        """Environment for commands on ``host``: ``P2PNODE_SOCKET`` and the lab variables.

        The directory of this Python comes first on ``PATH``, so ``p2pnode`` is found.
        """
        bindir = str(Path(sys.executable).parent)
        return os.environ | {
            "P2PNODE_SOCKET": str(self.socket_path(host)),
            "P2PLAB_HOST": self.host(host),
            "P2PLAB_ADDR": self.addr(host),
            "P2PLAB_DIR": str(self.host_dir(host)),
            "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "/usr/bin:/bin")]),
        }

    def node_command(self, host: str | int) -> list[str]:
        """The command that runs ``host``'s node (``node_cmd`` if one was given)."""
        if self.node_cmd is not None:
            return list(self.node_cmd)
        name = self.host(host)
        return [
            sys.executable, "-m", "p2pnode.cli", "run",
            "--listen", f"0.0.0.0:{NODE_PORT}",
            "--socket", str(self.socket_path(name)),
            "--data-dir", str(self.host_dir(name) / "data"),
            "--name", name,
            *self.node_args,
        ]

    # -- whole lab ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for warning in self.destroy():
            print(f"lab: {warning}", file=sys.stderr)

    def create(self) -> None:
        """Create namespaces, bridge and links, start the nodes, save the state.

        Raises ``LabError`` if the lab exists already or a step fails; whatever was
        created is destroyed again before the error (or ``KeyboardInterrupt``) goes on.
        """
        problem = environment_problem()
        if problem:
            raise LabError(problem)
        if self.hosts < 1:
            raise LabError("a lab needs at least one host")
        if self._existing_netns():
            raise LabError(f"lab {self.prefix!r} exists already: destroy it first")
        try:
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            self._build_switch()
            for name in self.host_names:
                self._build_host(name)
            self.save()
            if self.start_nodes:
                for name in self.host_names:
                    self.start_node(name)
        except BaseException:
            self.destroy()
            raise

    def _build_switch(self) -> None:
        sw = self.switch_netns
        _ip("netns", "add", sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", _BRIDGE, "type", "bridge", "mcast_snooping", "0")
        _ip("-n", sw, "link", "set", _BRIDGE, "up")

    def bridge_of(self, host: str) -> str:
        """The switch's bridge that ``host``'s cable is plugged into."""
        return _BRIDGE

    @property
    def host_prefixlen(self) -> int:
        """The prefix length of a host's address (its subnet's)."""
        return self.subnet.prefixlen

    def _build_host(self, name: str) -> None:
        """One host namespace and its cable: switch port ``name`` <-> host ``eth0``."""
        sw, ns = self.switch_netns, self.netns(name)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", name, "type", "veth", "peer", "name", _HOST_IF, "netns", ns)
        _ip("-n", sw, "link", "set", name, "master", self.bridge_of(name), "up")
        _ip("-n", ns, "addr", "add", f"{self.addr(name)}/{self.host_prefixlen}", "dev", _HOST_IF)
        _ip("-n", ns, "link", "set", _HOST_IF, "multicast", "on", "up")

    def destroy(self, *, purge: bool = False) -> list[str]:
        """Stop the nodes, delete links and namespaces. Idempotent; fine if half-made.

        Only processes this lab started (recorded pids) are stopped. Returns warnings:
        e.g. processes still inside a host namespace that the lab did not start (left
        alone; their namespace lives on until they exit, but without any link).
        ``purge`` also removes the lab directory (logs included).
        """
        warnings: list[str] = []
        for name in list(self._nodes):
            with contextlib.suppress(LabError, OSError):
                self.stop_node(name)
        existing = self._existing_netns()
        if self.switch_netns in existing:  # deleting a port deletes its host's eth0 too
            for link in [*self._bridge_port_names(), _BRIDGE]:
                with contextlib.suppress(LabError):
                    _ip("-n", self.switch_netns, "link", "del", link)
        for ns in existing:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  check=False).stdout.split()
            if pids:
                warnings.append(f"{ns}: processes not started by the lab left alone: {pids}")
            with contextlib.suppress(LabError):
                _ip("netns", "del", ns)
        self._remove_files(purge)
        return warnings

    def _bridge_port_names(self) -> list[str]:
        out = subprocess.run(["ip", "-n", self.switch_netns, "-o", "link", "show", "master",
                              _BRIDGE], capture_output=True, text=True, check=False).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def _existing_netns(self) -> list[str]:
        """This lab's namespaces that exist now (found by name, also those of a half lab)."""
        mine = re.compile(rf"{re.escape(self.prefix)}-(sw|h[0-9]+)")
        return [ns for ns in list_netns() if mine.fullmatch(ns)]

    def _remove_files(self, purge: bool) -> None:
        if purge:
            shutil.rmtree(self.lab_dir, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            (self.lab_dir / STATE_FILE).unlink()
        for name in self.host_names:
            with contextlib.suppress(OSError):
                self.socket_path(name).unlink()

    # -- state file --------------------------------------------------------------------

    def save(self) -> None:
        """Write ``<lab_dir>/state.json`` (hosts, subnet, node command, pids)."""
        state = {
            "prefix": self.prefix, "subnet": str(self.subnet), "hosts": self.hosts,
            "node_args": self.node_args, "node_cmd": self.node_cmd,
            "nodes": {h: [n.pid, n.started] for h, n in self._nodes.items()},
        }
        tmp = self.lab_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.lab_dir / STATE_FILE)

    @classmethod
    def load(cls, lab_dir: Path | str) -> Lab:
        """Open a lab created earlier (by another process) from its state file."""
        path = Path(lab_dir) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"no lab state at {path}: {exc}") from None
        lab = cls(
            state["hosts"], prefix=state["prefix"], subnet=state["subnet"],
            node_args=state["node_args"], node_cmd=state["node_cmd"], lab_dir=lab_dir,
        )
        lab._nodes = {h: _Node(pid, started) for h, (pid, started) in state["nodes"].items()}
        return lab

    # -- hosts -------------------------------------------------------------------------

    def exec(
        self, host: str | int, argv: list[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``host``'s namespace and wait (``subprocess.run`` kwargs).

        ``env`` entries given are added to ``self.env(host)``. Not checked by default.
        """
        env = self.env(host) | kwargs.pop("env", {})
        kwargs.setdefault("check", False)
        return subprocess.run(["ip", "netns", "exec", self.netns(host), *argv], env=env, **kwargs)

    def popen(self, host: str | int, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host``'s namespace (``subprocess.Popen`` kwargs)."""
        env = self.env(host) | kwargs.pop("env", {})
        return subprocess.Popen(["ip", "netns", "exec", self.netns(host), *argv], env=env,
                                **kwargs)

    def ping(self, src: str | int, dst: str | int, timeout: float = 1.0) -> bool:
        """Whether one ICMP echo from ``src`` to ``dst`` is answered within ``timeout``."""
        argv = [sys.executable, "-c", _PING_SCRIPT, self.addr(dst), str(timeout)]
        return self.exec(src, argv, capture_output=True, timeout=timeout + 10).returncode == 0

    def link_down(self, host: str | int) -> None:
        """Cut ``host``'s cable: its switch port goes down (the host sees no carrier)."""
        _ip("-n", self.switch_netns, "link", "set", self.host(host), "down")

    def link_up(self, host: str | int) -> None:
        """Plug ``host``'s cable back in."""
        _ip("-n", self.switch_netns, "link", "set", self.host(host), "up")

    def link_is_up(self, host: str | int) -> bool:
        """Whether ``host``'s switch port is administratively up."""
        out = subprocess.run(["ip", "-n", self.switch_netns, "-o", "link", "show", self.host(host)],
                             capture_output=True, text=True, check=False).stdout
        flags = out.partition("<")[2].partition(">")[0].split(",")
        return "UP" in flags

    # -- nodes -------------------------------------------------------------------------

    def node_pid(self, host: str | int) -> int | None:
        """The pid of ``host``'s node if it is running (and is the one the lab started)."""
        node = self._nodes.get(self.host(host))
        if node is None:
            return None
        if node.proc is not None:
            return node.pid if node.proc.poll() is None else None
        started = _start_time(node.pid)
        return node.pid if started is not None and started == node.started else None

    def start_node(self, host: str | int, *, ready_timeout: float | None = None) -> int:
        """Start ``host``'s node (log in ``node.log``); return its pid. ``LabError`` if running.

        With ``ready_timeout``, wait until the node reports ``READY=1`` over
        ``$NOTIFY_SOCKET`` (it listens and serves its socket); ``LabError`` if it does
        not within that many seconds.
        """
        name = self.host(host)
        if self.node_pid(name) is not None:
            raise LabError(f"{name}: the node is running already")
        (self.host_dir(name) / "data").mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            env: dict[str, str] = {}
            ready: socket.socket | None = None
            if ready_timeout is not None:
                ready = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
                notify_path = self.host_dir(name) / "notify.sock"
                notify_path.unlink(missing_ok=True)
                ready.bind(str(notify_path))
                ready.settimeout(ready_timeout)
                env["NOTIFY_SOCKET"] = str(notify_path)
            with self.log_path(name).open("ab") as log:
                proc = self.popen(name, self.node_command(name), stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  cwd=self.host_dir(name), start_new_session=True, env=env)
            # `ip netns exec` execs the command in place: this pid is the node's.
            self._nodes[name] = _Node(proc.pid, _start_time(proc.pid), proc)
            self.save()
            _wait_exec(proc)
            if ready is not None:
                _wait_ready(ready, name)
        return proc.pid

    def signal(self, host: str | int, sig: int) -> None:
        """Send ``sig`` to ``host``'s node. ``LabError`` if it is not running."""
        pid = self.node_pid(host)
        if pid is None:
            raise LabError(f"{self.host(host)}: no node running")
        os.kill(pid, sig)

    def stop_node(self, host: str | int, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop ``host``'s node: SIGTERM (and SIGCONT, in case it was stopped), then
        SIGKILL after ``timeout`` seconds. Returns its exit status if known. No-op if not running.
        """
        name = self.host(host)
        pid = self.node_pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)
            if not self._wait_exit(name, timeout):
                os.kill(pid, signal.SIGKILL)
                self._wait_exit(name, STOP_TIMEOUT)
        node = self._nodes.pop(name, None)
        if (self.lab_dir / STATE_FILE).exists():
            self.save()
        return node.proc.poll() if node is not None and node.proc is not None else None

    def _wait_exit(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for ``name``'s node to exit; whether it did."""
        node = self._nodes[name]
        if node.proc is not None:
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.node_pid(name) is not None:  # not our child: poll /proc
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def status(self) -> list[dict[str, Any]]:
        """One entry per host: name, namespace, address, link up, node pid (or None)."""
        return [
            {"host": h, "netns": self.netns(h), "addr": self.addr(h),
             "link_up": self.link_is_up(h), "pid": self.node_pid(h)}
            for h in self.host_names
        ]
