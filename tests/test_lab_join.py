"""Joining across subnets (issue 18) with real nodes, in a lab of network namespaces.

Three subnets joined by a router namespace (``scripts/routedlab.py``), three nodes per
subnet, mDNS off: multicast does not cross the router, so a node learns of the others
only through the one seed it is given (``--peer``, the first node of the next subnet)
and membership. Checked, as issue 18 asks:

- all 9 linked into one connected mesh within 10 s (of the last node serving), every
  node listing the 9 as alive;
- the seeds killed (SIGKILL): the 6 others still one connected mesh, each knowing the
  other 5 as alive;
- a node stopped (SIGSTOP) is declared dead by all others within 5 s, and is alive
  again once continued (it refutes);
- a node throttled (cgroup cpu quota, or SIGSTOP/SIGCONT bursts where no cgroup can be
  written: ``cpu_throttle``) for 2 s is never declared dead.

Needs root and iproute2 (skipped with the reason otherwise). Lab tests run in real
time: the checks poll the nodes' sockets (``POLL``) until a bound. The lab (namespaces,
processes, throttling) is torn down also when a check fails. ``pytest -s`` prints the
measured times.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

from p2pnode.client import ApiReplyError, BlockingClient
from scripts.netlab import list_netns
from scripts.routedlab import RoutedLab, cpu_throttle, netns_problem

PROBLEM = netns_problem()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))]

POLL = 0.1
SEEDS = ("h1", "h4", "h7")  # the first node of each subnet
LINK_BOUND = 10.0  # issue 18: all 9 linked within 10 s
STOP_BOUND = 5.0  # a stopped node dead everywhere within 5 s
SLOW_FOR = 2.0  # a throttled node is not declared dead
AFTER_SLOW = 6.0  # ... also while the suspicion it may have raised runs out


def seed_of(lab: RoutedLab, host: str) -> str:
    """The seed of ``host``: the first node of the next subnet."""
    return lab.hosts_in(lab.subnet_of(host) % lab.subnets + 1)[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RoutedLab]:
    before = set(list_netns())
    prefix = f"p2pj-{uuid.uuid4().hex[:6]}"
    lab = RoutedLab(3, 3, prefix=prefix, base=f"10.{uuid.uuid4().int % 90 + 110}",
                    node_args=["--no-mdns"], lab_dir=tmp_path / "lab", start_nodes=False)
    lab.host_args = {h: ["--peer", lab.node_addr(seed_of(lab, h))] for h in lab.host_names}
    with lab:
        yield lab
    assert not {ns for ns in set(list_netns()) - before if ns.startswith(prefix)}


# -- looking at the nodes ----------------------------------------------------------------


class Nodes:
    """One API connection per host, and what the hosts say about each other."""

    def __init__(self, lab: RoutedLab) -> None:
        self.lab = lab
        self.clients: dict[str, BlockingClient] = {}
        self.ids: dict[str, str] = {}
        self.pool = ThreadPoolExecutor(max_workers=lab.hosts)

    def close(self) -> None:
        self.pool.shutdown()
        for c in self.clients.values():
            c.close()

    def client(self, host: str) -> BlockingClient:
        if host not in self.clients:
            self.clients[host] = BlockingClient(self.lab.socket_path(host), timeout=10)
        return self.clients[host]

    def each(self, hosts: list[str], fn: Callable[[str], Any]) -> dict[str, Any]:
        futures = {h: self.pool.submit(fn, h) for h in hosts}
        wait(futures.values())  # all done before any error goes on: one client, one user
        return {h: f.result() for h, f in futures.items()}

    def wait_serving(self, hosts: list[str], within: float) -> None:
        """Until every host's node answers on its socket (it has started)."""
        deadline = time.monotonic() + within

        def serve(host: str) -> None:
            while True:
                try:
                    self.ids[host] = str(self.client(host).status()["node_id"])
                    return
                except (OSError, ApiReplyError) as err:
                    self.clients.pop(host, None)
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{host}: not serving after {within} s; "
                                             f"log: {self.lab.log_path(host).read_text()}"
                                             ) from err
                    time.sleep(POLL)

        self.each(hosts, serve)

    def name(self, node_id: str) -> str:
        return next((h for h, i in self.ids.items() if i == node_id), node_id[:8])

    def peers(self, hosts: list[str]) -> dict[str, set[str]]:
        """Each host's linked peers, as host names."""
        return self.each(hosts, lambda h: {self.name(str(p["node_id"]))
                                           for p in self.client(h).peers()})

    def has_members_op(self, host: str) -> bool:
        """Whether the node answers the API op ``members`` (issue 18's API part)."""
        try:
            self.client(host).request({"op": "members"})
        except ApiReplyError as err:
            if err.code == "unknown_op":
                return False
            raise
        return True

    def members(self, hosts: list[str]) -> dict[str, dict[str, str]]:
        """Each host's member list: host name -> state."""
        def one(host: str) -> dict[str, str]:
            reply = self.client(host).request({"op": "members"})
            return {self.name(str(m["node_id"])): str(m["state"]) for m in reply["members"]}
        return self.each(hosts, one)


def connected(peers: dict[str, set[str]]) -> bool:
    """Whether the links among the hosts of ``peers`` form one connected mesh."""
    hosts = set(peers)
    graph = {h: set() for h in hosts}
    for h, linked in peers.items():
        for p in linked & hosts:
            graph[h].add(p)
            graph[p].add(h)
    start = next(iter(hosts))
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen == hosts


def poll(done: Callable[[], bool], within: float, what: Callable[[], str]) -> float:
    """Seconds until ``done()``; ``AssertionError`` (saying ``what()``) after ``within``."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > within:
            raise AssertionError(f"not after {within} s: {what()}")
        time.sleep(POLL)
    return time.monotonic() - start


def knows(members: dict[str, dict[str, str]], hosts: list[str], state: str = "alive") -> bool:
    """Whether every observer in ``members`` holds each of ``hosts`` in ``state``."""
    return all(m.get(h) == state for m in members.values() for h in hosts)


# -- the scenario --------------------------------------------------------------------------


def test_nine_nodes_join_across_three_subnets_through_one_seed_each(lab: RoutedLab) -> None:
    nodes = Nodes(lab)
    try:
        run_scenario(lab, nodes)
    finally:
        nodes.close()


def run_scenario(lab: RoutedLab, nodes: Nodes) -> None:
    hosts = lab.host_names
    for host in hosts:
        lab.start_node(host)
    nodes.wait_serving(hosts, within=30.0)
    linked = poll(lambda: connected(nodes.peers(hosts)), LINK_BOUND,
                  lambda: f"links {nodes.peers(hosts)}")
    print(f"\n9 nodes linked into one mesh {linked:.2f} s after the last served")
    assert all(nodes.peers(hosts).values()), "a node without links"
    api = nodes.has_members_op(hosts[0])
    if api:
        known = poll(lambda: knows(nodes.members(hosts), hosts), LINK_BOUND,
                     lambda: f"members {nodes.members(hosts)}")
        print(f"every node knows the 9 as alive {linked + known:.2f} s after")
    else:  # links alone: wait until the mesh has links beyond the seeds'
        poll(lambda: connected({h: p - set(SEEDS) for h, p in nodes.peers(
            [h for h in hosts if h not in SEEDS]).items()}), LINK_BOUND,
            lambda: f"links {nodes.peers(hosts)}")

    # The seeds die without a word: the others stay one mesh and know each other.
    for seed in SEEDS:
        lab.signal(seed, signal.SIGKILL)
    rest = [h for h in hosts if h not in SEEDS]
    healed = poll(lambda: connected(nodes.peers(rest)) and (
        not api or knows(nodes.members(rest), rest)), LINK_BOUND,
        lambda: f"links {nodes.peers(rest)}" + (f", members {nodes.members(rest)}" if api
                                                 else ""))
    print(f"seeds killed: the 6 others connected and aware {healed:.2f} s later")
    if not api:
        pytest.skip("the links were checked; knowing the members, the stopped node and "
                    "the slow node need the API op members (issue 18's API part)")

    # A stopped node is declared dead by every other within 5 s, alive once continued.
    frozen, others = rest[0], rest[1:]
    lab.signal(frozen, signal.SIGSTOP)
    try:
        dead = poll(lambda: knows(nodes.members(others), [frozen], "dead"), STOP_BOUND,
                    lambda: f"members {nodes.members(others)}")
    finally:
        lab.signal(frozen, signal.SIGCONT)
    print(f"{frozen} stopped: dead everywhere after {dead:.2f} s")
    back = poll(lambda: knows(nodes.members(rest), rest), 15.0,
                lambda: f"members {nodes.members(rest)}")
    print(f"{frozen} continued: alive everywhere again after {back:.2f} s")

    # A node that is only slow for 2 s is never declared dead.
    slow, watchers = rest[1], [h for h in rest if h != rest[1]]
    pid = lab.node_pid(slow)
    assert pid is not None
    seen: dict[str, set[str]] = {}

    def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for h, m in nodes.members(watchers).items():
                seen.setdefault(m.get(slow, "?"), set()).add(h)
            time.sleep(POLL)

    with cpu_throttle(pid, share=0.02) as how:
        watch(SLOW_FOR)
    watch(AFTER_SLOW)
    print(f"{slow} throttled ({how}) for {SLOW_FOR} s: states seen {sorted(seen)}")
    assert "dead" not in seen, f"{slow} declared dead by {sorted(seen['dead'])}"
    assert knows(nodes.members(rest), rest)
