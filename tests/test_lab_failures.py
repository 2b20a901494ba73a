"""Failures of real nodes in a lab of network namespaces, with mDNS discovery (no --peer).

A node killed outright (SIGKILL), a frozen node (SIGSTOP/SIGCONT) and a cut cable
(switch port down/up). Each test measures how long the surviving peers take to drop
the failed node and how long the mesh takes to relink, prints it (``pytest -s`` shows
it) and checks it against the keepalive bound: a peer silent for ``link_timeout`` is
dropped at the next ping tick, so detection takes at most
``link_timeout + ping_interval`` (plus 1 s of slack for a loaded machine).

Needs root and iproute2; mDNS runs only inside the namespaces these tests create.
Waiting is event-driven: the node holds a ``peers`` request until its peer count is
within bounds (``wait_min``/``wait_max``); no test sleeps.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from p2pnode.client import ApiReplyError, BlockingClient
from p2pnode.config import NodeConfig
from scripts.netlab import Lab, environment_problem, list_netns

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(environment_problem() is not None, reason=str(environment_problem())),
]

CFG = NodeConfig()
#: The most a peer may take to drop a dead, frozen or cut-off node (seconds).
DETECT_BOUND = CFG.link_timeout + CFG.ping_interval + 1.0
#: Generous ceilings for waits whose time is measured and checked separately.
MESH_WITHIN = 20.0
RELINK_BOUND = 10.0
#: Longest time a single re-check of a ``peers`` wait may block (see ``wait_gone``).
RECHECK = 0.5

T = TypeVar("T")


def open_lab(hosts: int, octets: str, lab_dir: Path) -> Iterator[Lab]:
    """A lab with a unique prefix on subnet 10.<octets>.0/24, its files (node logs) in
    ``lab_dir``; checks afterwards that its namespaces are gone."""
    before = set(list_netns())
    prefix = f"p2pt-{uuid.uuid4().hex[:6]}"
    with Lab(hosts, prefix=prefix, subnet=f"10.{octets}.0/24", lab_dir=lab_dir,
             start_nodes=False) as lab:
        yield lab
    assert not {ns for ns in set(list_netns()) - before if ns.startswith(prefix)}


@pytest.fixture
def lab10(tmp_path: Path) -> Iterator[Lab]:
    yield from open_lab(10, f"233.{uuid.uuid4().int % 250 + 1}", tmp_path / "lab")


@pytest.fixture
def lab4(tmp_path: Path) -> Iterator[Lab]:
    yield from open_lab(4, f"234.{uuid.uuid4().int % 250 + 1}", tmp_path / "lab")


# -- helpers -------------------------------------------------------------------------------


def client(lab: Lab, host: str, timeout: float = 30.0) -> BlockingClient:
    return BlockingClient(lab.socket_path(host), timeout=timeout)


def node_id(lab: Lab, host: str) -> str:
    with client(lab, host) as c:
        return str(c.status()["node_id"])


def ids(peers: list[dict[str, Any]]) -> set[str]:
    return {str(p["node_id"]) for p in peers}


def peer_ids(lab: Lab, host: str) -> set[str]:
    with client(lab, host) as c:
        return ids(c.peers())


def closed_reasons(lab: Lab, host: str) -> dict[str, int]:
    with client(lab, host) as c:
        return dict(c.status()["links"]["closed"])


def wait_peers(lab: Lab, host: str, *, low: int | None = None, high: int | None = None,
               within: float = MESH_WITHIN) -> list[dict[str, Any]]:
    with client(lab, host, timeout=within + 10) as c:
        return c.peers(wait_min=low, wait_max=high, wait_timeout=within)


def _wait_for(lab: Lab, host: str, done: Callable[[set[str]], bool],
              step: Callable[[int], dict[str, int]], start: float, within: float) -> float:
    """Block until ``done(peer ids of host)``; return the seconds since ``start``.

    Each round holds a ``peers`` request in the node until its peer count moves the way
    ``step(count)`` says (``wait_min``/``wait_max``). A count can move while the answer
    does not change (another link came or went at the same moment), so a round lasts
    at most ``RECHECK`` seconds before the list is read again.
    """
    deadline = start + within
    with client(lab, host, timeout=within + 10) as c:
        peers = c.peers()
        while not done(ids(peers)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{host}: not done after {within}s; peers {ids(peers)}")
            bounds = step(len(peers))
            try:
                peers = c.peers(**bounds, wait_timeout=min(left, RECHECK))
            except ApiReplyError as err:
                if err.code != "timeout":
                    raise
                peers = c.peers()
    return time.monotonic() - start


def wait_gone(lab: Lab, host: str, gone: str, start: float, within: float) -> float:
    """Seconds from ``start`` until ``host`` has no link to node ``gone``."""
    return _wait_for(lab, host, lambda now: gone not in now,
                     lambda n: {"wait_max": n - 1}, start, within)


def wait_has(lab: Lab, host: str, peer: str, start: float, within: float) -> float:
    """Seconds from ``start`` until ``host`` has a link to node ``peer``."""
    return _wait_for(lab, host, lambda now: peer in now,
                     lambda n: {"wait_min": n + 1}, start, within)


def each(hosts: list[str], fn: Callable[[str], T]) -> dict[str, T]:
    """Run ``fn(host)`` for every host at once (in threads); results by host."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {h: pool.submit(fn, h) for h in hosts}
        return {h: f.result() for h, f in futures.items()}


def link_graph(lab: Lab, hosts: list[str]) -> dict[str, set[str]]:
    """The undirected graph of links between ``hosts``, by node id, from their peer lists."""
    by_id = each(hosts, lambda h: node_id(lab, h))
    lists = each(hosts, lambda h: peer_ids(lab, h))
    graph: dict[str, set[str]] = {by_id[h]: set() for h in hosts}
    for h, peers in lists.items():
        for p in peers:
            graph[by_id[h]].add(p)
            graph.setdefault(p, set()).add(by_id[h])
    return graph


def is_connected(graph: dict[str, set[str]]) -> bool:
    if not graph:
        return True
    start = next(iter(graph))
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen == set(graph)


def check_delivery(lab: Lab, hosts: list[str], topic: str, within: float = 10.0) -> None:
    """A message published on each of ``hosts`` reaches a subscriber on every one of them."""
    subs = {h: client(lab, h, timeout=within) for h in hosts}
    try:
        for sub in subs.values():
            sub.subscribe([topic])
        sent: dict[str, str] = {}
        for host in hosts:
            with client(lab, host) as pub:
                sent[pub.publish(topic, f"{topic} from {host}", wait=True)] = host

        def receive(host: str) -> set[str]:
            got: set[str] = set()
            events = subs[host].events()
            deadline = time.monotonic() + within
            while got != set(sent) and time.monotonic() < deadline:
                try:
                    event = next(events)
                except (StopIteration, TimeoutError):
                    break
                got.add(str(event["msg_id"]))
            return got

        got = each(hosts, receive)
        for host in hosts:
            missing = {sent[m] for m in set(sent) - got[host]}
            assert not missing, f"{host} did not receive the messages of {sorted(missing)}"
    finally:
        for sub in subs.values():
            sub.close()


def start_all(lab: Lab, hosts: list[str]) -> None:
    for host in hosts:
        lab.start_node(host, ready_timeout=10)


def report(title: str, times: dict[str, float]) -> None:
    cells = ", ".join(f"{h} {t:.3f}s" for h, t in sorted(times.items()))
    print(f"\n[{title}] max {max(times.values()):.3f}s: {cells}", flush=True)


# -- tests ---------------------------------------------------------------------------------


def test_killed_node_in_a_10_node_mesh_is_dropped_and_rejoins(lab10: Lab) -> None:
    hosts = lab10.host_names
    start_all(lab10, hosts)
    low = min(CFG.degree_low, len(hosts) - 1)
    started = time.monotonic()
    each(hosts, lambda h: wait_peers(lab10, h, low=low))
    print(f"\n[kill] every node has >= {low} peers {time.monotonic() - started:.3f}s "
          "after the last node was ready", flush=True)
    graph = link_graph(lab10, hosts)
    assert is_connected(graph), graph
    print(f"[kill] degrees: {sorted(len(v) for v in graph.values())}", flush=True)

    victim = "h4"
    victim_id = node_id(lab10, victim)
    live = [h for h in hosts if h != victim]
    before = each(live, lambda h: closed_reasons(lab10, h))
    former = [h for h, peers in each(live, lambda h: peer_ids(lab10, h)).items()
              if victim_id in peers]
    assert former, "the victim had no peers"

    lab10.signal(victim, signal.SIGKILL)
    killed = time.monotonic()
    detected = each(former, lambda h: wait_gone(lab10, h, victim_id, killed, DETECT_BOUND))
    report(f"kill: {len(former)} former peers dropped {victim}", detected)
    assert max(detected.values()) <= DETECT_BOUND
    for host in live:  # nobody holds a link to the dead node
        assert victim_id not in peer_ids(lab10, host), host
    after = each(live, lambda h: closed_reasons(lab10, h))
    reasons = {h: {k: after[h].get(k, 0) - before[h].get(k, 0) for k in after[h]
                   if after[h].get(k, 0) != before[h].get(k, 0)} for h in former}
    print(f"[kill] close reasons on the former peers: {reasons}", flush=True)

    # The survivors repair their degree from what mDNS told them, and stay one mesh.
    repaired = each(live, lambda h: wait_peers(lab10, h, low=min(low, len(live) - 1)))
    print(f"[kill] degrees repaired {time.monotonic() - killed:.3f}s after the kill", flush=True)
    assert all(victim_id not in ids(p) for p in repaired.values())
    live_graph = link_graph(lab10, live)
    assert victim_id not in live_graph
    assert is_connected(live_graph), live_graph
    check_delivery(lab10, live, "after-kill")

    # The node comes back (same data dir, same id), relinks and receives again.
    restart = time.monotonic()
    lab10.start_node(victim, ready_timeout=10)
    ready = time.monotonic() - restart
    assert node_id(lab10, victim) == victim_id
    relinked = wait_peers(lab10, victim, low=1)
    first_link = time.monotonic() - restart
    # Both ends of its links are open before a message is relied upon to cross them.
    both_ends = each(sorted(p["name"] for p in relinked),
                     lambda h: wait_has(lab10, h, victim_id, restart, RELINK_BOUND))
    print(f"[kill] restart: ready {ready:.3f}s, first link {first_link:.3f}s "
          f"(both ends {max(both_ends.values()):.3f}s) after start_node", flush=True)
    assert first_link <= RELINK_BOUND
    full = wait_peers(lab10, victim, low=low)
    print(f"[kill] restarted node has {len(full)} peers "
          f"{time.monotonic() - restart:.3f}s after start_node", flush=True)
    with client(lab10, victim, timeout=10) as sub:
        sub.subscribe(["after-restart"])
        publisher = next(h for h in live if h not in {p["name"] for p in relinked})
        with client(lab10, publisher) as pub:
            msg_id = pub.publish("after-restart", f"hello from {publisher}", wait=True)
        event = next(sub.events())
        assert event["msg_id"] == msg_id
        assert event["data"] == f"hello from {publisher}"


def test_frozen_node_is_dropped_by_timeout_and_relinks_after_thaw(lab4: Lab) -> None:
    hosts = lab4.host_names
    start_all(lab4, hosts)
    everyone = len(hosts) - 1
    each(hosts, lambda h: wait_peers(lab4, h, low=everyone))
    frozen = "h2"
    frozen_id = node_id(lab4, frozen)
    others = [h for h in hosts if h != frozen]
    before = each(others, lambda h: closed_reasons(lab4, h))

    lab4.signal(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        detected = each(others, lambda h: wait_gone(lab4, h, frozen_id, stopped, DETECT_BOUND))
        report(f"freeze: peers dropped {frozen}", detected)
        after = each(others, lambda h: closed_reasons(lab4, h))
    finally:
        lab4.signal(frozen, signal.SIGCONT)
    thawed = time.monotonic()
    # A frozen node's kernel still acknowledges TCP: only the keepalive can tell.
    assert min(detected.values()) > CFG.link_timeout - CFG.ping_interval
    assert max(detected.values()) <= DETECT_BOUND
    for host in others:
        assert after[host].get("timeout", 0) - before[host].get("timeout", 0) == 1, (
            host, before[host], after[host])

    relinked = wait_peers(lab4, frozen, low=everyone)
    on_frozen = time.monotonic() - thawed
    on_others = each(others, lambda h: wait_has(lab4, h, frozen_id, thawed, RELINK_BOUND))
    report(f"freeze: relinked after SIGCONT ({frozen} itself {on_frozen:.3f}s)", on_others)
    assert {p["name"] for p in relinked} == set(others)
    assert max(on_frozen, *on_others.values()) <= RELINK_BOUND
    print(f"[freeze] close reasons on {frozen} after the thaw: "
          f"{closed_reasons(lab4, frozen)}", flush=True)
    check_delivery(lab4, hosts, "after-thaw")


def test_cut_link_is_dropped_and_relinks_after_repair(lab4: Lab) -> None:
    hosts = lab4.host_names
    start_all(lab4, hosts)
    everyone = len(hosts) - 1
    each(hosts, lambda h: wait_peers(lab4, h, low=everyone))
    cut = "h3"
    cut_id = node_id(lab4, cut)
    others = [h for h in hosts if h != cut]
    before = each(others, lambda h: closed_reasons(lab4, h))

    lab4.link_down(cut)
    down = time.monotonic()
    try:
        # Both sides of the cut find out on their own (the cut node's API still works).
        detected = each([*others, cut], lambda h: (
            wait_gone(lab4, h, cut_id, down, DETECT_BOUND) if h != cut
            else _wait_for(lab4, h, lambda now: not now, lambda n: {"wait_max": 0},
                           down, DETECT_BOUND)))
        after = each(others, lambda h: closed_reasons(lab4, h))
    finally:
        lab4.link_up(cut)
    up = time.monotonic()
    own = detected.pop(cut)
    report(f"cut: peers dropped {cut} ({cut} dropped all its peers in {own:.3f}s)", detected)
    assert max(own, *detected.values()) <= DETECT_BOUND
    for host in others:
        assert after[host].get("timeout", 0) - before[host].get("timeout", 0) == 1, (
            host, before[host], after[host])

    # mDNS records are still cached and the dialers redial with backoff.
    relinked = wait_peers(lab4, cut, low=everyone, within=30.0)
    on_cut = time.monotonic() - up
    on_others = each(others, lambda h: wait_has(lab4, h, cut_id, up, 30.0))
    report(f"cut: relinked after link_up ({cut} itself {on_cut:.3f}s)", on_others)
    assert {p["name"] for p in relinked} == set(others)
    assert max(on_cut, *on_others.values()) <= RELINK_BOUND
    check_delivery(lab4, hosts, "after-repair")
