"""mDNS discovery: the bridge between python-zeroconf's threads and trio.

A node advertises ``<name>-<first 8 hex of id>._p2pnode._tcp.local.`` with TXT records
``id`` (32 hex), ``v`` (protocol version), ``net`` (network tag) and ``name``, and browses
for the same service type. See ``docs/discovery.md``.

How the bridge works (design habit 9):

- Every blocking zeroconf call (``Zeroconf()``, ``register_service``, ``get_service_info``,
  ``unregister_service``, ``close``) runs in a trio worker thread.
- Browser callbacks run on zeroconf's browser thread. They only hand ``(kind, service
  name)`` to trio with ``TrioToken.run_sync_soon``; in the trio thread that event goes into
  a bounded memory channel with ``send_nowait``. Nothing there raises: a full channel, a
  closed channel or a finished trio run are counted in ``stats`` and the event dropped.
  A service name whose event was dropped because the channel was full is re-checked
  (resolved again) once the channel has drained, so an overflow costs latency, not peers.
- Service info is resolved in trio (a worker thread per resolution, bounded by a
  ``CapacityLimiter`` and by ``resolve_timeout``), never inside the callback. The newest
  event for a service name wins: a resolution overtaken by a newer event is discarded.
- Records from the network are validated; a bad one is counted and ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

import trio
import zeroconf

from ..errors import ConfigError, LocalError, single_error
from ..ids import parse_id
from .interfaces import choose_interfaces
from .records import (
    MAX_NETWORK_BYTES,
    SERVICE_TYPE,
    BadRecord,
    DiscoveredPeer,
    instance_name,
    peer_from_info,
    txt_properties,
)

log = logging.getLogger(__name__)

__all__ = ["SERVICE_TYPE", "BadRecord", "DiscoveredPeer", "MdnsDiscovery"]

#: Default bound on one resolution of a discovered service, in seconds.
RESOLVE_TIMEOUT: Final = 2.0
#: Default number of resolutions that may run at once (each holds a worker thread).
MAX_CONCURRENT_RESOLVES: Final = 4
#: Most service names tracked at once (found, pending, or to re-check after an overflow);
#: more are ignored and counted in ``stats["too_many"]``.
MAX_TRACKED_SERVICES: Final = 1024

ADDED: Final = "added"
UPDATED: Final = "updated"
REMOVED: Final = "removed"
#: Internal kind: re-resolve a name whose event was dropped on overflow.
CHECK: Final = "check"

_STAT_KEYS: Final = (
    "events", "dropped_full", "dropped_closed", "dropped_finished", "handoff_errors",
    "resolved", "resolve_failed", "bad_record", "self", "found", "lost", "too_many",
)


async def advertised_addresses(advertise: str | None, interfaces: tuple[str, ...]) -> list[str]:
    """Return the addresses for the A/AAAA records.

    ``advertise`` may be an IP address or a host name (resolved once, here); ``None``
    means the addresses of ``interfaces``. Raises ``ConfigError`` if a name does not
    resolve. Cancellation: safe, nothing is changed.
    """
    if advertise is None:
        return list(interfaces)
    try:
        return [str(ipaddress.ip_address(advertise))]
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(advertise, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve advertise host {advertise!r}: {exc}") from None
    addrs = dict.fromkeys(str(info[4][0]) for info in infos)
    return sorted(addrs, key=lambda a: ":" in a)  # IPv4 first


# --------------------------------------------------------------------------- the bridge


class _Listener:
    """zeroconf ``ServiceListener`` whose methods run on zeroconf's browser thread.

    Each method only hands ``(kind, name)`` to trio and never raises.
    """

    def __init__(self, handoff: Callable[[str, str], None]) -> None:
        self._handoff = handoff

    def add_service(self, zc: Any, type_: str, name: str) -> None:
        """A service appeared."""
        self._handoff(ADDED, name)

    def update_service(self, zc: Any, type_: str, name: str) -> None:
        """A service's records changed."""
        self._handoff(UPDATED, name)

    def remove_service(self, zc: Any, type_: str, name: str) -> None:
        """A service said goodbye or expired."""
        self._handoff(REMOVED, name)


class MdnsDiscovery:
    """Advertise this node over mDNS and report peers found on the local network.

    Args:
        node_id: this node's id (32 hex digits); records carrying it are ignored.
        name: this node's name (TXT ``name`` and the instance label).
        port: the TCP port peers dial (1-65535).
        version: protocol version (TXT ``v``).
        network: network tag (TXT ``net``), at most 64 UTF-8 bytes.
        interfaces: IP addresses to bind mDNS to; empty means every up, multicast,
            non-loopback interface with an IPv4 address (its primary address).
        advertise: IP or host name for the A/AAAA records; default the interfaces' addresses.
        on_found: called in the trio thread with each peer found or updated.
        on_lost: called in the trio thread with the node id of a peer that went away.
        zeroconf_factory: makes the zeroconf object, called as ``factory(interfaces=[...])``
            in a worker thread; default ``zeroconf.Zeroconf``. Tests pass a fake.
        queue_size: bound of the event channel between zeroconf's thread and trio.

    Raises ``LocalError`` (``ConfigError`` for network settings) on bad arguments.
    ``resolve_timeout`` and ``max_concurrent_resolves`` are plain attributes that may be
    changed before ``run()``. ``stats`` counts events, drops and bad records.
    """

    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        port: int,
        version: int,
        network: str,
        interfaces: tuple[str, ...] = (),
        advertise: str | None = None,
        on_found: Callable[[DiscoveredPeer], None],
        on_lost: Callable[[str], None],
        zeroconf_factory: Callable[..., Any] | None = None,
        queue_size: int = 256,
    ) -> None:
        try:
            self.node_id = parse_id(node_id).hex()
        except ValueError as exc:
            raise LocalError(str(exc)) from None
        if not 1 <= port <= 65535:
            raise LocalError(f"port must be 1-65535, not {port}")
        if version < 0 or len(network.encode()) > MAX_NETWORK_BYTES or queue_size < 1:
            raise LocalError("version must be >= 0, network <= 64 bytes, queue_size >= 1")
        self.name = name
        self.port = port
        self.version = version
        self.network = network
        self.interfaces = tuple(interfaces)
        self.advertise = advertise
        self.instance = instance_name(name, self.node_id)
        self.resolve_timeout = RESOLVE_TIMEOUT
        self.max_concurrent_resolves = MAX_CONCURRENT_RESOLVES
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._on_found = on_found
        self._on_lost = on_lost
        self._factory: Callable[..., Any] = zeroconf_factory or zeroconf.Zeroconf
        self._queue_size = queue_size
        self._stats_lock = threading.Lock()  # for counts made on zeroconf's thread
        self._running = False
        #: Set once the service is registered (announced) on the network.
        self.registered = trio.Event()
        self._own_key = ""
        self._known: dict[str, str] = {}  # service name (lower case) -> node id
        self._pending: dict[str, str] = {}  # service name -> newest unhandled kind
        self._workers: set[str] = set()  # service names with a worker task
        self._overflow: set[str] = set()  # names whose event was dropped on a full channel

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advertise and browse until cancelled, reporting peers to the callbacks.

        Creates the zeroconf object (in a worker thread), starts the browser, calls
        ``task_status.started()``, then registers the service (name probing takes about
        a second, during which peers already found are reported) and hands events to
        ``on_found``/``on_lost`` until cancelled. Exceptions raised by the callbacks
        propagate (they are bugs).

        Raises ``ConfigError`` (no suitable interface, unresolvable ``advertise``),
        ``LocalError`` if already running, ``OSError`` if the sockets cannot be opened
        (before ``started``), ``zeroconf.Error`` or ``OSError`` if registration fails
        (after ``started``).

        Cancellation: unregisters (peers see the goodbye), removes the browser and closes
        zeroconf in a shielded ``finally``; when this returns, zeroconf's threads have ended.
        Blocking zeroconf calls already running in a worker thread are waited for (they
        are bounded by zeroconf's own timeouts and ``resolve_timeout``).
        """
        if self._running:
            raise LocalError("MdnsDiscovery.run() is already running")
        self._running = True
        try:
            interfaces = choose_interfaces(self.interfaces)
            addresses = await advertised_addresses(self.advertise, interfaces)
            await self._run(interfaces, addresses, task_status)
        except BaseExceptionGroup as group:
            leaf = single_error(group)
            if isinstance(leaf, Exception) and not isinstance(leaf, BaseExceptionGroup):
                raise leaf from None  # a failure in one task, e.g. registration
            raise
        finally:
            self._running = False

    async def _run(
        self,
        interfaces: tuple[str, ...],
        addresses: list[str],
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Open zeroconf, serve, and always close it (see ``run``)."""
        self._known.clear()
        self._pending.clear()
        self._overflow.clear()
        info = self._service_info(addresses)
        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[tuple[str, str]](self._queue_size)
        listener = _Listener(functools.partial(self._handoff, token, send))
        with send, recv:
            make = functools.partial(self._factory, interfaces=list(interfaces))
            zc = await trio.to_thread.run_sync(make)
            registered = False
            try:
                # Browse first: registering probes the name for about a second (RFC 6762
                # section 8), and the peers already out there can be found and dialled
                # meanwhile.
                self._own_key = info.name.lower()
                await trio.to_thread.run_sync(zc.add_service_listener, SERVICE_TYPE, listener)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._consume, zc, recv)
                    task_status.started()
                    await trio.to_thread.run_sync(
                        functools.partial(zc.register_service, info, allow_name_change=True)
                    )
                    registered = True
                    self._own_key = info.name.lower()  # may have been renamed on conflict
                    self.registered.set()
                    log.info("mDNS: advertising %s on %s", info.name, ", ".join(interfaces))
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_close_quietly, zc, listener, info, registered)

    def _service_info(self, addresses: list[str]) -> zeroconf.ServiceInfo:
        """Build the ``ServiceInfo`` this node registers."""
        props = txt_properties(
            node_id=self.node_id, name=self.name, version=self.version, network=self.network
        )
        return zeroconf.ServiceInfo(
            SERVICE_TYPE,
            f"{self.instance}.{SERVICE_TYPE}",
            port=self.port,
            properties=props,
            server=f"p2pnode-{self.node_id}.local.",  # unique: the whole id
            parsed_addresses=addresses,
        )

    # -- zeroconf's thread -------------------------------------------------------------

    def _handoff(
        self,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[tuple[str, str]],
        kind: str,
        name: str,
    ) -> None:
        """Hand one browser event to trio. Runs on zeroconf's thread; never raises."""
        try:
            token.run_sync_soon(self._push, send, kind, name)
        except trio.RunFinishedError:
            self._count_from_thread("dropped_finished")
        except Exception:
            self._count_from_thread("handoff_errors")

    def _count_from_thread(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    # -- trio's thread -----------------------------------------------------------------

    def _push(self, send: trio.MemorySendChannel[tuple[str, str]], kind: str, name: str) -> None:
        """Put one event in the channel (run by ``run_sync_soon``); never raises."""
        try:
            send.send_nowait((kind, name))
        except trio.WouldBlock:
            self.stats["dropped_full"] += 1
            if len(self._overflow) < MAX_TRACKED_SERVICES:
                self._overflow.add(name)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.stats["dropped_closed"] += 1
        except Exception:
            self.stats["handoff_errors"] += 1

    async def _consume(self, zc: Any, recv: trio.MemoryReceiveChannel[tuple[str, str]]) -> None:
        """Take events from the channel and give each service name to a worker task."""
        limiter = trio.CapacityLimiter(self.max_concurrent_resolves)
        async with trio.open_nursery() as nursery:
            start = functools.partial(self._schedule, nursery, zc, limiter)
            async for kind, name in recv:
                self.stats["events"] += 1
                start(kind, name)
                if self._overflow and recv.statistics().current_buffer_used == 0:
                    for lost_name in sorted(self._overflow):
                        start(CHECK, lost_name)
                    self._overflow.clear()

    def _schedule(
        self,
        nursery: trio.Nursery,
        zc: Any,
        limiter: trio.CapacityLimiter,
        kind: str,
        name: str,
    ) -> None:
        """Record the newest event for ``name`` and make sure a worker handles it."""
        key = name.lower()
        if key == self._own_key:
            self.stats["self"] += 1
            return
        if key not in self._pending and len(self._pending) >= MAX_TRACKED_SERVICES:
            self.stats["too_many"] += 1
            return
        if kind != CHECK or key not in self._pending:
            self._pending[key] = kind
        if key not in self._workers:
            self._workers.add(key)
            nursery.start_soon(self._work, zc, limiter, key, name)

    async def _work(self, zc: Any, limiter: trio.CapacityLimiter, key: str, name: str) -> None:
        """Handle the events of one service name until none is pending.

        Cancellation: a running resolution is waited for, then the worker ends.
        """
        try:
            while key in self._pending:
                kind = self._pending.pop(key)
                if kind == REMOVED:
                    self._forget(key)
                    continue
                peer = await self._resolve(zc, limiter, name)
                if key in self._pending:
                    continue  # overtaken by a newer event: handle that instead
                if peer is not None:
                    self._found(key, peer)
                elif kind == CHECK:
                    self._forget(key)
        finally:
            self._workers.discard(key)

    async def _resolve(
        self, zc: Any, limiter: trio.CapacityLimiter, name: str
    ) -> DiscoveredPeer | None:
        """Resolve and validate one service; ``None`` if it failed, is bad, or is us."""
        timeout_ms = max(1, int(self.resolve_timeout * 1000))
        lookup = functools.partial(zc.get_service_info, SERVICE_TYPE, name, timeout=timeout_ms)
        try:
            info = await trio.to_thread.run_sync(lookup, limiter=limiter)
        except zeroconf.Error as exc:  # e.g. a malformed name from the network
            log.debug("mDNS: cannot resolve %r: %r", name, exc)
            info = None
        if info is None:
            self.stats["resolve_failed"] += 1
            return None
        try:
            peer = peer_from_info(info)
        except BadRecord as exc:
            self.stats["bad_record"] += 1
            log.debug("mDNS: ignoring %r: %s", name, exc)
            return None
        self.stats["resolved"] += 1
        if peer.node_id == self.node_id:
            self.stats["self"] += 1
            return None
        return peer

    def _found(self, key: str, peer: DiscoveredPeer) -> None:
        """Remember ``key`` as ``peer`` and report it (a changed id is a loss first)."""
        previous = self._known.get(key)
        if previous is None and len(self._known) >= MAX_TRACKED_SERVICES:
            self.stats["too_many"] += 1
            return
        if previous is not None and previous != peer.node_id:
            self._forget(key)
        self._known[key] = peer.node_id
        self.stats["found"] += 1
        self._on_found(peer)

    def _forget(self, key: str) -> None:
        """Drop ``key``; report its node lost unless another service name still has it."""
        node_id = self._known.pop(key, None)
        if node_id is None or node_id in self._known.values():
            return
        self.stats["lost"] += 1
        self._on_lost(node_id)


def _close_quietly(zc: Any, listener: _Listener, info: Any, registered: bool) -> None:
    """Stop browsing, unregister, close zeroconf. Runs in a worker thread.

    Each step is attempted even if an earlier one failed; failures are logged, since
    nothing more can be done about them during shutdown.
    """
    steps: list[tuple[str, Callable[[], object]]] = [
        ("remove browser", functools.partial(zc.remove_service_listener, listener)),
    ]
    if registered:
        steps.append(("unregister", functools.partial(zc.unregister_service, info)))
    steps.append(("close", zc.close))
    for what, step in steps:
        try:
            step()
        except (zeroconf.Error, OSError, RuntimeError, AssertionError) as exc:
            log.warning("mDNS shutdown: %s failed: %r", what, exc)
