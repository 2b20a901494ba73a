"""Real nodes with mDNS discovery in a lab of network namespaces (no --peer anywhere).

Needs root and iproute2: mDNS runs only inside the namespaces this test creates.
Waiting is event-driven: nodes report readiness over $NOTIFY_SOCKET, and the node
itself holds a ``peers`` request until its peer count is within bounds.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from p2pnode.client import BlockingClient
from scripts.netlab import Lab, environment_problem, list_netns

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(environment_problem() is not None, reason=str(environment_problem())),
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    before = set(list_netns())
    prefix = f"p2pt-{uuid.uuid4().hex[:6]}"
    with Lab(5, prefix=prefix, subnet="10.231.7.0/24", start_nodes=False) as lab:
        yield lab
    assert not {ns for ns in set(list_netns()) - before if ns.startswith(prefix)}


def client(lab: Lab, host: str) -> BlockingClient:
    return BlockingClient(lab.socket_path(host), timeout=20)


def wait_peers(lab: Lab, host: str, *, low: int | None = None, high: int | None = None,
               within: float = 5.0) -> list[dict[str, object]]:
    with client(lab, host) as c:
        return c.peers(wait_min=low, wait_max=high, wait_timeout=within)


def test_mdns_mesh_forms_delivers_and_follows_joins_and_leaves(lab: Lab) -> None:
    first = ["h1", "h2", "h3", "h4"]
    for host in first:
        lab.start_node(host, ready_timeout=10)
    last_start = time.monotonic()
    for host in first:
        peers = wait_peers(lab, host, low=3, within=5.0)
        assert {p["name"] for p in peers} == set(first) - {host}
    assert time.monotonic() - last_start < 5.0

    # A message published on any host reaches subscribers on all the others.
    subs = {host: client(lab, host) for host in first}
    try:
        for sub in subs.values():
            sub.subscribe(["lab"])
        sent = {}
        for host in first:
            with client(lab, host) as pub:
                sent[pub.publish("lab", f"from {host}", wait=True)] = host
        for host, sub in subs.items():
            got = {}
            events = sub.events()
            while len(got) < len(sent):
                event = next(events)
                got[event["msg_id"]] = event["data"]
            assert set(got) == set(sent), host
    finally:
        for sub in subs.values():
            sub.close()

    # A node started later is found and linked by everyone.
    lab.start_node("h5", ready_timeout=10)
    joined = time.monotonic()
    assert len(wait_peers(lab, "h5", low=4, within=5.0)) == 4
    for host in first:
        wait_peers(lab, host, low=4, within=5.0)
    assert time.monotonic() - joined < 5.0

    # A node that dies without a word (SIGKILL) is dropped by its peers within 5 s.
    lab.signal("h3", signal.SIGKILL)
    killed = time.monotonic()
    for host in ("h1", "h2", "h4", "h5"):
        peers = wait_peers(lab, host, high=3, within=5.0)
        assert "h3" not in {p["name"] for p in peers}
    assert time.monotonic() - killed < 5.0
