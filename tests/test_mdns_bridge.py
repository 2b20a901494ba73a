"""Tests of the zeroconf-to-trio bridge (p2pnode.discovery.mdns).

Most tests feed the bridge from a fake zeroconf: no sockets at all. The fake's browser
callbacks run on a real foreign thread, as zeroconf's do. One test runs real zeroconf
between two private network namespaces (root and iproute2 only).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from zeroconf import ServiceInfo

from p2pnode.discovery.interfaces import choose_interfaces, suitable_ipv4_addresses
from p2pnode.discovery.mdns import SERVICE_TYPE, DiscoveredPeer, MdnsDiscovery
from p2pnode.discovery.records import BadRecord, instance_name, peer_from_info
from p2pnode.errors import ConfigError, LocalError

from .mdns_peer import PeerProcess, netns_unavailable, two_namespaces

OWN_ID = "0123456789abcdef0123456789abcdef"
PEER_ID = "fedcba9876543210fedcba9876543210"
OTHER_ID = "00112233445566778899aabbccddeeff"


def service_name(label: str) -> str:
    return f"{label}.{SERVICE_TYPE}"


def make_info(
    label: str,
    node_id: str | bytes = PEER_ID,
    *,
    props: dict[str | bytes, str | bytes | None] | None = None,
    addrs: tuple[str, ...] = ("10.0.0.2",),
    port: int = 7420,
) -> ServiceInfo:
    """A resolved service as zeroconf would return it."""
    if props is None:
        props = {"id": node_id, "v": "1", "net": "lab", "name": label}
    return ServiceInfo(
        SERVICE_TYPE, service_name(label), port=port, properties=props,
        server=f"{label}.local.", parsed_addresses=list(addrs),
    )


class FakeZeroconf:
    """Stands in for ``zeroconf.Zeroconf``: records calls, answers lookups from ``infos``."""

    def __init__(self, *, interfaces: list[str]) -> None:
        self.interfaces = interfaces
        self.infos: dict[str, ServiceInfo] = {}
        self.registered: list[ServiceInfo] = []
        self.unregistered: list[ServiceInfo] = []
        self.listener: Any = None
        self.listener_removed = False
        self.closed = False
        self.lookups: list[str] = []
        self.lookup_started = threading.Event()
        self.gate: threading.Event | None = None  # when set, lookups wait for it

    def register_service(self, info: ServiceInfo, allow_name_change: bool = False) -> None:
        self.registered.append(info)

    def add_service_listener(self, type_: str, listener: Any) -> None:
        assert type_ == SERVICE_TYPE
        self.listener = listener

    def remove_service_listener(self, listener: Any) -> None:
        assert listener is self.listener
        self.listener_removed = True

    def get_service_info(self, type_: str, name: str, timeout: int = 3000) -> ServiceInfo | None:
        self.lookups.append(name)
        self.lookup_started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return self.infos.get(name)

    def unregister_service(self, info: ServiceInfo) -> None:
        self.unregistered.append(info)

    def close(self) -> None:
        self.closed = True

    def emit(self, *events: tuple[str, str]) -> None:
        """Deliver browser events on a foreign thread, as zeroconf's browser thread does.

        Blocks the caller until the thread is done: every event is then queued for trio,
        none processed yet (so a burst really arrives as a burst).
        """

        def deliver() -> None:
            for kind, name in events:
                getattr(self.listener, f"{kind}_service")(self, SERVICE_TYPE, name)

        thread = threading.Thread(target=deliver, name="fake-zeroconf-browser")
        thread.start()
        thread.join(10)
        assert not thread.is_alive()


class Harness:
    """An ``MdnsDiscovery`` wired to a fake zeroconf and recording its callbacks."""

    def __init__(self, **kwargs: Any) -> None:
        self.zc: FakeZeroconf | None = None
        self.found: list[DiscoveredPeer] = []
        self.lost: list[str] = []
        self._changed = trio.Event()
        args: dict[str, Any] = {
            "node_id": OWN_ID, "name": "me", "port": 7420, "version": 1, "network": "lab",
            "interfaces": ("10.0.0.1",), "on_found": self._on_found, "on_lost": self._on_lost,
            "zeroconf_factory": self._make,
        }
        self.disco = MdnsDiscovery(**(args | kwargs))
        self.disco.max_concurrent_resolves = 1  # resolutions in event order: deterministic

    def _make(self, **kwargs: Any) -> FakeZeroconf:
        self.zc = FakeZeroconf(**kwargs)
        return self.zc

    def _on_found(self, peer: DiscoveredPeer) -> None:
        self.found.append(peer)
        self._changed.set()

    def _on_lost(self, node_id: str) -> None:
        self.lost.append(node_id)
        self._changed.set()

    @property
    def fake(self) -> FakeZeroconf:
        assert self.zc is not None
        return self.zc

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (no polling) until a callback made ``predicate`` true."""
        while not predicate():
            self._changed = trio.Event()
            await self._changed.wait()

    async def sentinel(self) -> None:
        """Resolve one good extra peer and wait for it: every earlier event is then done.

        Resolutions run one at a time in event order, so when the sentinel is found,
        every event emitted before it has been fully handled.
        """
        label = f"sentinel-{len(self.found)}"
        self.fake.infos[service_name(label)] = make_info(label, OTHER_ID)
        count = len(self.found)
        self.fake.emit(("add", service_name(label)))
        await self.wait_until(lambda: len(self.found) > count)
        assert self.found[-1].name == label


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Fail a test that leaves a thread behind (idle trio worker threads excepted)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [
            t for t in set(threading.enumerate()) - before
            if t.is_alive() and not t.name.startswith("Trio thread")
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # a thread that is ending; bounded
    assert not left, f"threads left behind: {left}"


@contextlib.asynccontextmanager
async def running(harness: Harness) -> Any:
    """Run the discovery service for the body of the ``async with``, then cancel it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(harness.disco.run)
        await harness.disco.registered.wait()
        yield harness.fake
        nursery.cancel_scope.cancel()


async def test_registers_browses_and_closes() -> None:
    h = Harness()
    with trio.fail_after(5):
        async with running(h) as fake:
            assert fake.interfaces == ["10.0.0.1"]
            (info,) = fake.registered
            assert info.name == f"me-01234567.{SERVICE_TYPE}"
            assert info.server == f"p2pnode-{OWN_ID}.local."
            assert info.port == 7420
            assert info.parsed_addresses() == ["10.0.0.1"]
            assert info.properties == {b"id": OWN_ID.encode(), b"v": b"1", b"net": b"lab",
                                       b"name": b"me"}
            assert fake.listener is not None
            assert not fake.closed
    assert fake.unregistered == [info]
    assert fake.listener_removed
    assert fake.closed


async def test_advertise_overrides_the_announced_address() -> None:
    h = Harness(advertise="192.0.2.7", interfaces=("10.0.0.1", "10.0.1.1"))
    with trio.fail_after(5):
        async with running(h) as fake:
            assert fake.interfaces == ["10.0.0.1", "10.0.1.1"]
            assert fake.registered[0].parsed_addresses() == ["192.0.2.7"]


async def test_add_update_remove() -> None:
    h = Harness()
    name = service_name("peer")
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[name] = make_info("peer", PEER_ID.upper())
            fake.emit(("add", name))
            await h.wait_until(lambda: len(h.found) == 1)
            assert h.found[0] == DiscoveredPeer(PEER_ID, "peer", (("10.0.0.2", 7420),), 1, "lab")

            fake.infos[name] = make_info("peer", addrs=("10.0.0.3", "2001:db8::3"), port=7500)
            fake.emit(("update", name))
            await h.wait_until(lambda: len(h.found) == 2)
            assert h.found[1].addrs == (("10.0.0.3", 7500), ("2001:db8::3", 7500))

            fake.emit(("remove", name))
            await h.wait_until(lambda: h.lost == [PEER_ID])
            fake.emit(("remove", name))  # already gone: nothing more
            await h.sentinel()
    assert h.lost == [PEER_ID]
    assert h.disco.stats["found"] == 3  # peer twice, sentinel once
    assert h.disco.stats["lost"] == 1


async def test_self_is_ignored() -> None:
    h = Harness()
    with trio.fail_after(5):
        async with running(h) as fake:
            own = fake.registered[0].name
            fake.emit(("add", own))  # our own registration: not even resolved
            twin = service_name("twin")  # another name carrying our id
            fake.infos[twin] = make_info("twin", OWN_ID)
            fake.emit(("add", twin))
            await h.sentinel()
            assert own not in fake.lookups
            assert twin in fake.lookups
    assert [p.node_id for p in h.found] == [OTHER_ID]
    assert h.disco.stats["self"] == 2


BAD_PROPS: dict[str, dict[str | bytes, str | bytes | None]] = {
    "no id": {"v": "1"},
    "short id": {"id": "abc", "v": "1"},
    "non-hex id": {"id": "z" * 32, "v": "1"},
    "id without value": {"id": None, "v": "1"},
    "no version": {"id": PEER_ID},
    "version not int": {"id": PEER_ID, "v": "one"},
    "negative version": {"id": PEER_ID, "v": "-1"},
    "name not utf-8": {"id": PEER_ID, "v": "1", "name": b"\xff\xfe"},
    "name unprintable": {"id": PEER_ID, "v": "1", "name": "a\nb"},
    "network too long": {"id": PEER_ID, "v": "1", "net": "n" * 65},
}


@pytest.mark.parametrize("props", list(BAD_PROPS.values()), ids=list(BAD_PROPS))
async def test_malformed_txt_is_ignored(props: dict[str | bytes, str | bytes | None]) -> None:
    h = Harness()
    name = service_name("bad")
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[name] = make_info("bad", props=props)
            fake.emit(("add", name))
            await h.sentinel()
    assert [p.node_id for p in h.found] == [OTHER_ID]
    assert h.disco.stats["bad_record"] == 1


async def test_unresolvable_and_addressless_services_are_ignored() -> None:
    h = Harness()
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[service_name("noaddr")] = make_info("noaddr", addrs=("fe80::1",))
            fake.emit(("add", service_name("ghost")), ("add", service_name("noaddr")))
            await h.sentinel()
    assert [p.node_id for p in h.found] == [OTHER_ID]
    assert h.disco.stats["resolve_failed"] == 1
    assert h.disco.stats["bad_record"] == 1


async def test_new_id_under_same_name_is_a_loss_then_a_find() -> None:
    h = Harness()
    name = service_name("peer")
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[name] = make_info("peer", PEER_ID)
            fake.emit(("add", name))
            await h.wait_until(lambda: len(h.found) == 1)
            fake.infos[name] = make_info("peer", OTHER_ID)
            fake.emit(("update", name))
            await h.wait_until(lambda: len(h.found) == 2)
    assert h.lost == [PEER_ID]
    assert h.found[1].node_id == OTHER_ID


async def test_node_under_two_names_is_lost_with_the_last() -> None:
    h = Harness()
    first, second = service_name("a"), service_name("b")
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[first] = make_info("a", PEER_ID)
            fake.infos[second] = make_info("b", PEER_ID)
            fake.emit(("add", first), ("add", second))
            await h.wait_until(lambda: len(h.found) == 2)
            fake.emit(("remove", first))
            await h.sentinel()
            assert h.lost == []
            fake.emit(("remove", second))
            await h.wait_until(lambda: h.lost == [PEER_ID])


async def test_removal_overtakes_a_running_resolution() -> None:
    h = Harness()
    name = service_name("peer")
    with trio.fail_after(5):
        async with running(h) as fake:
            fake.infos[name] = make_info("peer")
            fake.gate = threading.Event()
            fake.emit(("add", name))
            await trio.to_thread.run_sync(fake.lookup_started.wait, 5)
            fake.emit(("remove", name))
            await trio.testing.wait_all_tasks_blocked()  # the removal is now pending
            fake.gate.set()
            await h.sentinel()
    assert [p.node_id for p in h.found] == [OTHER_ID]
    assert h.lost == []


async def test_overflow_drops_without_blocking_then_recovers() -> None:
    h = Harness(queue_size=2)
    names = [service_name(f"p{i}") for i in range(10)]
    with trio.fail_after(5):
        async with running(h) as fake:
            for i, name in enumerate(names):
                fake.infos[name] = make_info(f"p{i}", f"{i:032x}")
            await trio.testing.wait_all_tasks_blocked()  # the consumer waits in receive()
            # One burst, queued before trio runs any of it: the waiting consumer takes one,
            # the buffer two, and the other 7 are dropped (the emitting thread never waits).
            fake.emit(*(("add", name) for name in names))
            assert h.disco.stats["dropped_full"] == 0  # nothing processed yet
            await h.wait_until(lambda: len(h.found) == 10)  # the dropped ones re-checked
    assert h.disco.stats["dropped_full"] == 7
    assert sorted(p.name for p in h.found) == sorted(f"p{i}" for i in range(10))


async def test_callback_after_shutdown_is_dropped() -> None:
    h = Harness()
    with trio.fail_after(5):
        async with running(h) as fake:
            pass
        fake.emit(("add", service_name("late")), ("remove", service_name("late")))
        await trio.testing.wait_all_tasks_blocked()
    assert h.disco.stats["dropped_closed"] == 2
    assert h.found == []


def test_callback_after_trio_run_finished_is_dropped() -> None:
    holder: list[Harness] = []

    async def main() -> None:
        holder.append(Harness())
        with trio.fail_after(5):
            async with running(holder[0]):
                pass

    trio.run(main)
    h = holder[0]
    h.fake.emit(("add", service_name("late")))  # the token's run is over: must not raise
    assert h.disco.stats["dropped_finished"] == 1


async def test_failing_registration_still_closes() -> None:
    h = Harness()

    def broken_register(info: ServiceInfo, allow_name_change: bool = False) -> None:
        raise OSError("no route")

    def make(**kwargs: Any) -> FakeZeroconf:
        zc = h._make(**kwargs)
        zc.register_service = broken_register  # type: ignore[method-assign]
        return zc

    h.disco._factory = make
    with trio.fail_after(5), pytest.raises(OSError, match="no route"):
        await h.disco.run()
    assert h.fake.closed
    assert h.fake.unregistered == []


def test_bad_arguments() -> None:
    def build(**kwargs: Any) -> MdnsDiscovery:
        args: dict[str, Any] = {
            "node_id": OWN_ID, "name": "me", "port": 7420, "version": 1, "network": "lab",
            "on_found": print, "on_lost": print,
        }
        return MdnsDiscovery(**(args | kwargs))

    for bad in ({"node_id": "xyz"}, {"port": 0}, {"network": "n" * 65}, {"queue_size": 0}):
        with pytest.raises(LocalError):
            build(**bad)
    with pytest.raises(ConfigError, match="IP address"):
        choose_interfaces(("eth0",))
    with pytest.raises(ConfigError, match="unicast"):
        choose_interfaces(("0.0.0.0",))
    assert choose_interfaces(("10.1.2.3", "2001:db8::1")) == ("10.1.2.3", "2001:db8::1")


async def test_run_rejects_bad_interface_before_opening_zeroconf() -> None:
    h = Harness(interfaces=("not-an-ip",))
    with trio.fail_after(5), pytest.raises(ConfigError):
        await h.disco.run()
    assert h.zc is None


def test_instance_name_fits_one_label() -> None:
    assert instance_name("me", OWN_ID) == "me-01234567"
    assert instance_name("a.b\\c", OWN_ID) == "a-b-c-01234567"
    assert instance_name("", OWN_ID) == "p2pnode-01234567"
    long = instance_name("é" * 64, OWN_ID)
    assert len(long.encode()) <= 63 - 4  # room for zeroconf's "-N" on a conflict
    assert long.endswith("-01234567")
    assert long[:-9] == "é" * 25  # cut on a character boundary


def test_peer_from_info_orders_and_filters_addresses() -> None:
    info = make_info("p", addrs=("2001:db8::7", "fe80::1", "10.0.0.7", "0.0.0.0"))
    assert peer_from_info(info).addrs == (("10.0.0.7", 7420), ("2001:db8::7", 7420))
    with pytest.raises(BadRecord):
        peer_from_info(make_info("p", port=0))


def test_suitable_addresses_exclude_loopback() -> None:
    """Only reads the interface table (no traffic)."""
    for addr in suitable_ipv4_addresses():
        assert not addr.startswith("127.")


# --------------------------------------------------------------------------- real zeroconf


@pytest.mark.netns
@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
def test_real_zeroconf_between_two_namespaces() -> None:
    """A finds B and B finds A; A leaves and B sees the goodbye; no thread is left.

    The ids share all but their last digit: host names and instance names must still
    differ, or the peers' address records would mix.
    """
    id_a, id_b = "0" * 31 + "a", "0" * 31 + "b"
    with two_namespaces() as (ns_a, ns_b):
        peers: list[PeerProcess] = []
        try:
            a = PeerProcess(ns_a, ["--id", id_a, "--name", "alpha", "--iface", "10.213.0.1",
                                   "--expect", id_b, "--mode", "leave"])
            peers.append(a)
            # B binds to "all suitable interfaces": inside its namespace, only veth0.
            b = PeerProcess(ns_b, ["--id", id_b, "--name", "beta", "--expect", id_a,
                                   "--mode", "stay"])
            peers.append(b)
            deadline = time.monotonic() + 10
            found_by_a = a.wait_for("found", deadline)
            found_by_b = b.wait_for("found", deadline)
            assert found_by_a["node_id"] == id_b
            assert found_by_a["addrs"] == [["10.213.0.2", 7420]]
            assert (found_by_b["name"], found_by_b["version"], found_by_b["network"]) == (
                "alpha", 1, "test")
            assert found_by_b["addrs"] == [["10.213.0.1", 7420]]
            assert a.proc.stdin is not None
            a.proc.stdin.write(b"leave\n")
            a.proc.stdin.flush()
            assert b.wait_for("lost", deadline)["node_id"] == id_a
            for peer in (a, b):
                assert peer.wait_for("threads", deadline)["left"] == []
                assert peer.proc.wait(max(0.1, deadline - time.monotonic())) == 0
        finally:
            for peer in peers:
                peer.stop()
