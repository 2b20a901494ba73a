"""No file descriptor or task is left behind by thousands of short-lived connections.

A real node in this process (loopback TCP, a real Unix socket, no mDNS) takes 2,000
connect/disconnect cycles on its TCP port and 2,000 on its API socket, from a seeded
mix of well-behaved, half-finished and broken clients, 16 at a time. Once the node has
settled (every task blocked, no API session and no link left; no real-time sleep) the
process has no more open file descriptors and no more trio tasks than before, and the
node still links and carries a message.

The TCP port is tried twice: speaking the plain link protocol (Hello and all), and,
where the tree has the TLS transport, as the node runs by default (TLS first: partial
and whole ClientHellos, members that finish the TLS handshake and then the link
handshake, strangers whose certificate is refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import os
import random
import socket
import ssl
import struct
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode import PROTOCOL_VERSION
from p2pnode.client import open_client
from p2pnode.config import NodeConfig
from p2pnode.node import Node
from p2pnode.wire.link import LinkProtocol, LinkState
from p2pnode.wire.messages import Gossip, Hello, encode_message

from .conftest import loopback_config, running_nodes

SEED = 20_261_125
TCP_CYCLES = 2_000
UNIX_CYCLES = 2_000
WORKERS = 16  # cycles running at once
CEILING = 20.0  # seconds for a whole test

# What a TCP client does between connect and close, speaking the plain link protocol.
PLAIN_KINDS = (
    "close",  # nothing
    "garbage",  # random bytes (often a length header over the frame limit)
    "partial_hello",  # a prefix of a valid Hello
    "hello_close",  # a full valid Hello (random node id), closed before the reply is read
    "hello_reply_close",  # a full valid Hello, closed once the node's Hello is in
    "handshake_close",  # the whole handshake (the link opens), maybe a Gossip, closed
)
# The same against a TLS node. A plain Hello is garbage to it.
TLS_KINDS = (
    "close", "garbage", "partial_hello",
    "tls_partial",  # part of a ClientHello
    "tls_client_hello",  # a whole ClientHello, then silence
    "tls_close",  # the TLS handshake as a member, then close
    "tls_stranger",  # the TLS handshake with a certificate of another network
    "tls_hello_close", "tls_hello_reply_close", "tls_handshake_close",  # as above, in TLS
)
# What an API client does between connect and close. "request_noread" sends complete
# requests (a held ``peers`` wait among them) and closes without reading the replies
# (half the time once a reply has arrived).
UNIX_KINDS_FULL = ("close", "request_noread", "half_line")
# The same mix, except that a client reads every reply before it closes.
UNIX_KINDS_READ = ("close", "request_read", "half_line")



HAS_TLS = importlib.util.find_spec("p2pnode.net.tls") is not None
needs_tls = pytest.mark.skipif(not HAS_TLS, reason="this tree has no TLS transport yet")


def plain_overrides() -> dict[str, Any]:
    """Config overrides for a node that speaks the plain link protocol on TCP."""
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    return {"insecure": True} if "insecure" in fields else {}


def tls_kit_parts(members: int = 8) -> tuple[list[tuple[bytes, ssl.SSLContext]], ssl.SSLContext]:
    """Client TLS contexts of ``members`` random members of the open network (with their
    node ids) and of one node of another network."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from p2pnode.identity import NetworkKey, NodeIdentity
    from p2pnode.net.tls import make_contexts

    kit = []
    for _ in range(members):
        identity = NodeIdentity.generate()
        kit.append((identity.node_id, make_contexts(identity, NetworkKey.open())[1]))
    other = NetworkKey(ed25519.Ed25519PrivateKey.generate(), "stranger")
    return kit, make_contexts(NodeIdentity.generate(), other)[1]


# -- measuring ---------------------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Every task of this trio run (the root task's whole tree)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    todo = [root]
    count = 0
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


async def settle(node: Node, tasks: int | None = None, rounds: int = 100) -> None:
    """Wait until the node is idle: every task blocked for a moment, no API session and
    no link left, and (if given) no more tasks than ``tasks``. Gives up after ``rounds``
    idle checks; the caller's assertions then say what is left."""
    assert node.api is not None
    assert node.links is not None
    for _ in range(rounds):
        await trio.testing.wait_all_tasks_blocked(cushion=0.02)
        if not node.api.sessions and not node.links.links and (
            tasks is None or task_count() <= tasks
        ):
            return


# -- TCP clients ---------------------------------------------------------------------------


@dataclass
class TcpKit:
    """What a TCP client needs: the node's address and config; for a TLS node, client
    contexts of members (with their identities) and of a stranger to the network."""

    addr: tuple[str, int]
    config: NodeConfig
    network_tag: str
    members: list[tuple[bytes, ssl.SSLContext]] = field(default_factory=list)
    stranger: ssl.SSLContext | None = None

    def hello(self, rng: random.Random, node_id: bytes | None = None) -> Hello:
        return Hello(version=PROTOCOL_VERSION, node_id=node_id or rng.randbytes(16),
                     name="fd-probe", listen="", network=self.network_tag)


async def handshake(stream: trio.abc.Stream, proto: LinkProtocol, *, open_link: bool
                    ) -> LinkState:
    """Run our side of the link handshake until the node's Hello is in (or, with
    ``open_link``, until the link is open); returns the state reached (early on EOF or a
    Refuse)."""
    await stream.send_all(proto.hello_bytes())
    while proto.state not in (LinkState.OPEN, LinkState.CLOSED):
        if proto.state is LinkState.DECIDE:
            if not open_link:
                break
            reply = proto.proceed()  # an Accept if we have the lower id
            if reply:
                await stream.send_all(reply)
            proto.receive_data(b"")  # an Accept that came behind the node's Hello
            continue
        data = await stream.receive_some(65536)
        if not data:
            break
        proto.receive_data(data)
    return proto.state


async def link_client(stream: trio.abc.Stream, kind: str, rng: random.Random, kit: TcpKit,
                      node_id: bytes | None = None) -> None:
    """Speak the link protocol on ``stream`` as ``kind`` says, then return (to close)."""
    hello = kit.hello(rng, node_id)
    if kind == "partial_hello":
        frame = encode_message(hello)
        await stream.send_all(frame[: rng.randrange(1, len(frame))])
    elif kind == "hello_close":
        await stream.send_all(encode_message(hello))
    elif kind in ("hello_reply_close", "handshake_close"):
        cfg = kit.config
        proto = LinkProtocol(hello, max_frame=cfg.max_frame, max_payload=cfg.max_payload)
        state = await handshake(stream, proto, open_link=kind == "handshake_close")
        if state is LinkState.OPEN and rng.random() < 0.5:
            msg = Gossip(id=rng.randbytes(16), origin=hello.node_id, topic="fd-gossip",
                         data=b"x" * rng.randint(0, 200), hops=1)
            await stream.send_all(encode_message(msg))


def client_hello_bytes(ctx: ssl.SSLContext) -> bytes:
    """The bytes of a TLS ClientHello made with ``ctx`` (no socket involved)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def tcp_cycle(kit: TcpKit, kind: str, rng: random.Random) -> None:
    """Connect to the node's port, do what ``kind`` says, close (an RST a quarter of the
    time). TLS kinds start with ``tls_``; the others speak plain link protocol."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stream = trio.SocketStream(sock)
    reset = rng.random() < 0.25
    try:
        await sock.connect(kit.addr)
        if kind == "close":
            pass
        elif kind == "garbage":
            await stream.send_all(rng.randbytes(rng.randint(1, 64)))
        elif not kind.startswith("tls_"):
            await link_client(stream, kind, rng, kit)
        elif kind in ("tls_partial", "tls_client_hello"):
            hello = client_hello_bytes(rng.choice(kit.members)[1])
            cut = rng.randrange(1, len(hello)) if kind == "tls_partial" else len(hello)
            await stream.send_all(hello[:cut])
        else:
            member_id, ctx = rng.choice(kit.members)
            if kind == "tls_stranger":
                assert kit.stranger is not None
                ctx = kit.stranger
            tls = trio.SSLStream(stream, ctx, server_side=False)
            await tls.do_handshake()
            if kind == "tls_stranger":  # the node refuses the certificate: read that
                await tls.receive_some(65536)
            elif kind != "tls_close":
                await link_client(tls, kind.removeprefix("tls_"), rng, kit, member_id)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise OSError(str(exc)) from exc
    finally:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


# -- API clients -------------------------------------------------------------------------


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view):]


def api_request(rng: random.Random) -> bytes:
    """One request line: every op, held waits, and some the node must reject."""
    choices: list[dict[str, Any] | bytes] = [
        {"op": "status"},
        {"op": "peers"},
        {"op": "publish", "topic": "fd-pub", "data": "x" * rng.randint(0, 100)},
        {"op": "subscribe", "topics": ["fd-sub"]},
        {"op": "unsubscribe", "topics": ["fd-sub"]},
        {"op": "peers", "wait_min": 5, "timeout": 60},  # held: this node gets no peers
        {"op": "nope"},
        b"{not json",
    ]
    pick = rng.choice(choices)
    line = pick if isinstance(pick, bytes) else json.dumps(pick).encode()
    return line + b"\n"


def held(line: bytes) -> bool:
    """Whether the node holds this request (a ``peers`` wait it cannot satisfy)."""
    return b"wait_min" in line


async def unix_cycle(path: str, kind: str, rng: random.Random) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.connect(path)
        if kind == "request_noread":
            lines = [api_request(rng) for _ in range(rng.randint(1, 3))]
            await send_all(sock, b"".join(lines))
            if not held(lines[0]) and rng.random() < 0.5:
                await trio.lowlevel.wait_readable(sock)  # a reply is in: close unread
        elif kind == "request_read":
            line = api_request(rng)
            while held(line):  # it would not be answered
                line = api_request(rng)
            await send_all(sock, line)
            buf = b""
            while b"\n" not in buf:
                data = await sock.recv(65536)
                if not data:
                    break
                buf += data
        elif kind == "half_line":
            line = api_request(rng)
            await send_all(sock, line[: rng.randrange(1, len(line))])
        else:
            assert kind == "close"
    finally:
        sock.close()


# -- the tests ---------------------------------------------------------------------------


async def run_cycles(kit: TcpKit, tcp_kinds: tuple[str, ...], unix_path: Path,
                     unix_kinds: tuple[str, ...], rng: random.Random, tcp: int, unix: int
                     ) -> Counter[str]:
    """Run ``tcp`` + ``unix`` cycles of random kinds, ``WORKERS`` at a time; returns how
    many of each kind ran, and ``client_error``: the client's own send or receive failed,
    which is fine (the node may close first)."""
    plan = [("tcp", rng.choice(tcp_kinds)) for _ in range(tcp)]
    plan += [("unix", rng.choice(unix_kinds)) for _ in range(unix)]
    rng.shuffle(plan)
    done: Counter[str] = Counter()

    async def worker(seed: int) -> None:
        wrng = random.Random(seed)
        while plan:
            where, kind = plan.pop()
            try:
                if where == "tcp":
                    await tcp_cycle(kit, kind, wrng)
                else:
                    await unix_cycle(str(unix_path), kind, wrng)
            except (OSError, ssl.SSLError):
                done["client_error"] += 1
            done[f"{where}:{kind}"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker, rng.randrange(1 << 32))
    return done


async def round_trip(target: Node, helper: Node) -> None:
    """The helper links to the target over TCP; a message published on the helper
    reaches a subscriber on the target."""
    assert target.listen_addr is not None
    assert helper.links is not None
    assert target.links is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(helper.links.keep_dialling, *target.listen_addr)
        while helper.node_id not in target.links.links:
            await target.links.changed.wait()
        while target.node_id not in helper.links.links:
            await helper.links.changed.wait()
        async with await open_client(target.config.socket_path) as sub:
            await sub.subscribe(["round-trip"])
            async with await open_client(helper.config.socket_path) as pub:
                msg_id = await pub.publish("round-trip", "still works", wait=True)
            event = await sub.next_event()
            assert (event["msg_id"], event["data"]) == (msg_id, "still works")
        nursery.cancel_scope.cancel()


async def check_cycles_leave_nothing(short_tmp: Path, transport: str,
                                     unix_kinds: tuple[str, ...]) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    members, stranger = tls_kit_parts() if transport == "tls" else ([], None)
    overrides = plain_overrides() if transport == "plain" else {}
    tcp_kinds = PLAIN_KINDS if transport == "plain" else TLS_KINDS
    with trio.fail_after(CEILING):
        configs = [loopback_config(short_tmp, name, **overrides) for name in ("target", "helper")]
        async with running_nodes(configs) as (target, helper):
            assert target.listen_addr is not None
            assert target.api is not None
            assert target.links is not None
            kit = TcpKit(target.listen_addr, target.config, target.network_tag, members, stranger)
            path = target.config.socket_path
            # Warm up (anything made lazily on first use), then measure.
            await run_cycles(kit, tcp_kinds, path, unix_kinds, rng, tcp=50, unix=50)
            await settle(target)
            fds, tasks = fd_count(), task_count()

            begun = time.monotonic()
            done = await run_cycles(kit, tcp_kinds, path, unix_kinds, rng,
                                    tcp=TCP_CYCLES, unix=UNIX_CYCLES)
            cycled = time.monotonic()
            await settle(target, tasks)
            ls, api = target.links.stats, target.api.stats
            print(f"\n[fd {transport}] {TCP_CYCLES}+{UNIX_CYCLES} cycles in "
                  f"{cycled - begun:.2f}s, settled in {time.monotonic() - cycled:.3f}s; "
                  f"fds {fds} -> {fd_count()}, tasks {tasks} -> {task_count()}"
                  f"\n[fd {transport}] cycles: {dict(sorted(done.items()))}"
                  f"\n[fd {transport}] links opened {ls.opened}, closed {dict(ls.closed)}, "
                  f"refused {dict(ls.refused)}, handshake_failed {dict(ls.handshake_failed)}; "
                  f"api clients {api.clients_accepted} accepted, {api.clients_refused} "
                  f"refused; transport {getattr(target.transport, 'stats', '-')}", flush=True)
            assert not target.api.sessions, f"{len(target.api.sessions)} API sessions left"
            assert not target.links.links, f"{len(target.links.links)} links left"
            assert task_count() <= tasks, "tasks left behind"
            assert fd_count() <= fds, "file descriptors left behind"
            assert ls.opened > 0  # the handshake cycles really opened links
            assert api.clients_refused == 0

            await round_trip(target, helper)
    print(f"[fd {transport}] whole test {time.monotonic() - started:.2f}s", flush=True)


@pytest.mark.parametrize("transport", ["plain", pytest.param("tls", marks=needs_tls)])
async def test_4000_connect_cycles_leave_no_fd_or_task_behind(
    short_tmp: Path, transport: str
) -> None:
    """API clients that send a request read its reply before closing (see the next test)."""
    await check_cycles_leave_nothing(short_tmp, transport, UNIX_KINDS_READ)


async def test_4000_connect_cycles_with_unread_api_replies_leave_nothing(
    short_tmp: Path,
) -> None:
    """The full mix: API clients also close without reading their replies, and leave
    while a ``peers`` wait is held."""
    await check_cycles_leave_nothing(short_tmp, "plain", UNIX_KINDS_FULL)


# -- the two bugs, one client each --------------------------------------------------------


async def open_unix(path: Path) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    return sock


async def one_client_then_check(short_tmp: Path,
                                client: Callable[[Path], Awaitable[None]]) -> None:
    """Run ``client`` against a fresh node; afterwards the node has no session, fd or task
    more than before and still answers."""
    with trio.fail_after(10):
        async with running_nodes([loopback_config(short_tmp, "n")]) as (node,):
            assert node.api is not None
            await settle(node)
            fds, tasks = fd_count(), task_count()
            await client(node.config.socket_path)
            await settle(node, tasks, rounds=20)
            assert not node.api.sessions
            assert (fd_count(), task_count()) == (fds, tasks)
            async with await open_client(node.config.socket_path) as c:
                assert (await c.status())["clients"] == 1


async def test_client_closing_with_an_unread_reply_leaves_the_node_running(
    short_tmp: Path,
) -> None:
    async def client(path: Path) -> None:
        sock = await open_unix(path)
        await send_all(sock, b'{"op":"status"}\n')
        await trio.lowlevel.wait_readable(sock)  # the reply is in, unread
        sock.close()

    await one_client_then_check(short_tmp, client)


async def test_client_leaving_during_a_held_peers_wait_is_released(short_tmp: Path) -> None:
    async def client(path: Path) -> None:
        sock = await open_unix(path)
        await send_all(sock, b'{"op":"peers","wait_min":5,"timeout":60}\n')
        sock.close()

    await one_client_then_check(short_tmp, client)



# -- connections cut short by cancellation (TLS transport) ---------------------------------



@needs_tls
async def test_dials_cut_off_in_the_tls_handshake_close_their_sockets(
    short_tmp: Path,
) -> None:
    """A peer that accepts TCP but never answers TLS (a frozen node: its kernel still
    completes the TCP handshake) costs no file descriptor per dial."""
    cfg = loopback_config(short_tmp, "n", dial_timeout=0.1)
    leaked = -1
    with warnings.catch_warnings(record=True), trio.fail_after(10):
        warnings.simplefilter("always", ResourceWarning)  # the collector's, collected here
        with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as mute:
            await mute.bind(("127.0.0.1", 0))
            mute.listen(64)  # never accepts: connects succeed, then silence
            host, port = mute.getsockname()[:2]
            async with running_nodes([cfg]) as (node,):
                assert node.links is not None
                await settle(node)
                fds = fd_count()
                gc.disable()  # what is left open is what only the collector would close
                try:
                    for _ in range(5):
                        result = await node.links.dial(host, port)
                        assert result.code == "unreachable"
                    leaked = fd_count() - fds
                finally:
                    gc.enable()
        gc.collect()
    assert leaked == 0, f"{leaked} sockets left open by 5 dials"


@needs_tls
async def test_node_stopped_during_a_tls_handshake_closes_that_connection(
    short_tmp: Path,
) -> None:
    """A connection still in its TLS handshake when the node stops is closed, not left
    for the garbage collector."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with trio.fail_after(10):
            async with running_nodes([loopback_config(short_tmp, "n")]) as (node,):
                assert node.listen_addr is not None
                with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    await sock.connect(node.listen_addr)
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    node.kill()  # while its TLS handshake waits for our ClientHello
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked
