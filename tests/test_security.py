"""Security: network membership, encryption on the wire, signed batches, identity binding,
floods, and local clients of other users. Real loopback TCP and TLS unless noted."""

from __future__ import annotations

import os
import pwd
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from p2pnode import PROTOCOL_VERSION
from p2pnode.client import open_client
from p2pnode.gossip.signing import sign_batch
from p2pnode.identity import NetworkKey, NodeIdentity, generate_network_key
from p2pnode.net.tls import TlsTransport
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    make_identity,
    open_raw_link,
    start_memory_mesh,
    wait_linked,
    wait_until,
)
from p2pnode.wire.link import LinkProtocol, LinkState, PeerRefused
from p2pnode.wire.messages import Batch, Hello, Item, encode_message

from .conftest import loopback_config, running_nodes


def keyed(base: Path, name: str, key: Path | None, **kw: Any) -> Any:
    return loopback_config(base, name, network_key=key, **kw)


async def test_nodes_of_different_networks_cannot_link_either_way(short_tmp: Path) -> None:
    key1, key2 = short_tmp / "net1.key", short_tmp / "net2.key"
    generate_network_key(key1)
    generate_network_key(key2)
    configs = [keyed(short_tmp, "a", key1), keyed(short_tmp, "b", key2),
               keyed(short_tmp, "c", None), keyed(short_tmp, "d", key1)]
    with trio.fail_after(30):
        async with running_nodes(configs) as (a, b, c, d):
            for x, y in ((a, b), (b, a), (a, c), (c, a)):
                assert x.links is not None
                result = await x.links.dial(*y.listen_addr)  # type: ignore[misc]
                assert result.code == "unreachable", (x.config.name, y.config.name, result)
                assert result.failure is not None
                assert result.failure.reason == "network_mismatch"
                assert f"(network tag {y.network_tag}, ours {x.network_tag})" \
                    in result.failure.message
                assert "CERTIFICATE_VERIFY_FAILED" in result.failure.detail
            assert all(len(n.links.links) == 0 for n in (a, b, c))  # type: ignore[union-attr]
            # Members of the same network do link, and messages cross only there.
            async with trio.open_nursery() as nursery:
                assert a.links is not None
                nursery.start_soon(a.links.keep_dialling, *d.listen_addr)  # type: ignore[misc]
                await wait_linked([a, d], [(0, 1)])
                subs = {n.config.name: await open_client(n.config.socket_path) for n in (b, c, d)}
                for sub in subs.values():
                    await sub.subscribe([])
                async with await open_client(a.config.socket_path) as pub:
                    msg_id = await pub.publish("t", "members only", wait=True)
                assert (await subs["d"].next_event())["msg_id"] == msg_id
                for name in ("b", "c"):
                    with trio.move_on_after(0.5):  # a bounded check that nothing arrives
                        await subs[name].next_event()
                        pytest.fail(f"{name} got a message from another network")
                for sub in subs.values():
                    await sub.aclose()
                nursery.cancel_scope.cancel()
            assert a.status_info().security.members_only is True


async def relay(listener: trio.SocketListener, target: tuple[str, int],
                recorded: bytearray) -> None:
    """Accept one connection and pass bytes both ways to ``target``, recording them."""
    client = await listener.accept()
    try:
        server = await trio.open_tcp_stream(*target)
    except BaseException:
        await trio.aclose_forcefully(client)
        raise

    async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                recorded.extend(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server)
            nursery.start_soon(pump, server, client)
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "insecure-control"])
async def test_a_relay_sees_no_payload(short_tmp: Path, insecure: bool) -> None:
    marker = f"secret-{random.Random(5).getrandbits(64):x}"
    configs = [loopback_config(short_tmp, n, insecure=insecure) for n in ("a", "b")]
    recorded = bytearray()
    with trio.fail_after(30):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener, running_nodes(configs) as (a, b), trio.open_nursery() as nursery:
            nursery.start_soon(relay, listener, b.listen_addr, recorded)
            relay_port = listener.socket.getsockname()[1]
            assert a.links is not None
            nursery.start_soon(a.links.keep_dialling, "127.0.0.1", relay_port)
            await wait_linked([a, b], [(0, 1)])
            async with await open_client(b.config.socket_path) as sub:
                await sub.subscribe(["t"])
                async with await open_client(a.config.socket_path) as pub:
                    await pub.publish("t", marker)
                assert (await sub.next_event())["data"] == marker
            nursery.cancel_scope.cancel()
    assert len(recorded) > 200  # the relay did carry the link
    assert (marker.encode() in recorded) is insecure


def hostile_batches(victim_origin: NodeIdentity, attacker: NodeIdentity) -> list[Batch]:
    """Batches an attacker might send: each must be dropped by the first honest node."""
    good = sign_batch(attacker, b"\x10" * 16, None, [Item(b"\x11" * 16, "t", b"hello")])
    other = sign_batch(attacker, b"\x20" * 16, None, [Item(b"\x21" * 16, "t", b"other")])
    return [
        # the payload changed after signing
        msgspec.structs.replace(good, id=b"\x30" * 16, body=good.body.replace(b"hello", b"HELLO")),
        # a missing (zero) signature
        msgspec.structs.replace(other, id=b"\x40" * 16, sig=bytes(64)),
        # someone else's signature on this body
        msgspec.structs.replace(good, id=b"\x50" * 16, sig=other.sig),
        # claims to come from the victim, signed with the attacker's key
        msgspec.structs.replace(good, id=b"\x60" * 16, origin=victim_origin.node_id),
        # claims the victim's key, which the attacker cannot sign with
        msgspec.structs.replace(good, id=b"\x70" * 16, origin=victim_origin.node_id,
                            key=victim_origin.public),
    ]


async def test_forged_and_modified_batches_are_dropped_at_the_first_honest_node(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = await start_memory_mesh(nursery, [(1, 0)], 2, network=net, seed=9)
            await wait_linked(nodes, [(1, 0)])
            got = [0, 0]
            for i, node in enumerate(nodes):
                node.on_deliver.append(lambda msg, i=i: got.__setitem__(i, got[i] + 1))
            attacker = make_identity(random.Random(666))
            bad = hostile_batches(nodes[1].identity, attacker)
            links = nodes[0].links
            assert links is not None
            for k, batch in enumerate(bad, start=1):
                # Each forged batch is dropped and costs the sender its link.
                stream = await open_raw_link(net, nodes[0], attacker.node_id, "attacker")
                await stream.send_all(encode_message(msgspec.structs.replace(batch, hops=1)))
                await wait_until(lambda k=k: links.stats.closed["bad_signature"] == k)
                await stream.aclose()
            assert nodes[0].router.stats.rejected == len(bad)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [0, 0]
            assert nodes[1].router.stats.received == 0  # nothing was forwarded
            assert nodes[0].status_info().security.rejected_batches == len(bad)
            # The genuine batch still gets through, even after forged copies of its id.
            stream = await open_raw_link(net, nodes[0], attacker.node_id, "attacker")
            good = sign_batch(attacker, b"\x10" * 16, None, [Item(b"\x11" * 16, "t", b"hello")])
            await stream.send_all(encode_message(msgspec.structs.replace(good, hops=1)))
            await wait_until(lambda: got == [1, 1])
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_node_id_that_is_not_the_certificates_is_refused(short_tmp: Path) -> None:
    """A member of the network that claims another node id (an old id, or someone
    else's) in its Hello is refused: the id must be the hash of its certificate key."""
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            for claimed in (b"\x00" * 16, a.node_id):  # a made-up old id; the node's own
                me = NodeIdentity.generate()
                transport = TlsTransport(me, NetworkKey.open(), 5.0)
                stream = await transport.connect(*a.listen_addr)  # type: ignore[misc]
                proto = LinkProtocol(
                    Hello(PROTOCOL_VERSION, claimed, "liar", "", network="open"),
                    max_frame=1 << 20, max_payload=1 << 19)
                await stream.send_all(proto.hello_bytes())
                events: list[Any] = []
                while not any(isinstance(e, PeerRefused) for e in events):
                    data = await stream.receive_some()
                    assert data, "closed without a reason"
                    events += proto.receive_data(data)
                    if proto.state is LinkState.DECIDE:
                        await stream.send_all(proto.proceed())
                refused = next(e for e in events if isinstance(e, PeerRefused))
                assert refused.code in ("identity_mismatch", "self")
                await stream.aclose()
            assert a.links is not None
            assert a.links.stats.refused["identity_mismatch"] >= 1
            assert not a.links.links


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_a_flood_of_bad_connections_does_not_stop_honest_traffic(short_tmp: Path) -> None:
    configs = [loopback_config(short_tmp, n, handshake_timeout=2.0) for n in ("a", "b")]
    with trio.fail_after(60):
        async with running_nodes(configs) as (a, b), trio.open_nursery() as nursery:
            assert a.links is not None
            nursery.start_soon(a.links.keep_dialling, *b.listen_addr)  # type: ignore[misc]
            await wait_linked([a, b], [(0, 1)])
            sub = await open_client(b.config.socket_path)
            await sub.subscribe(["t"])
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            fds, rss = fd_count(), rss_mb()
            # 200 connections from another loopback address: half send garbage, half
            # stall in the middle of a TLS ClientHello.
            flood = []
            for k in range(200):
                sock = trio.socket.socket()
                await sock.bind(("127.0.0.2", 0))
                await sock.connect(b.listen_addr)
                await sock.send(os.urandom(300) if k % 2 else b"\x16\x03\x01\x02\x00\x01")
                flood.append(sock)
            async with await open_client(a.config.socket_path) as pub:
                sent = {await pub.publish("t", f"m{k}", wait=True) for k in range(200)}
            got = set()
            while len(got) < len(sent):
                got.add((await sub.next_event())["msg_id"])
            assert got == sent
            for sock in flood:
                sock.close()
            await sub.aclose()
            # The node settles: every flood connection is gone, fds and memory are back.
            tcp = b.transport.tcp  # type: ignore[attr-defined]
            await wait_until(lambda: fd_count() <= fds and tcp.per_ip == {"127.0.0.1": 1},
                             poll=0.05)
            assert rss_mb() < rss + 20
            refused = b.status_info().security
            assert refused.tls_failed + refused.refused_per_ip + refused.busy_refused \
                >= 200
            await assert_still_linked(a, b)
            nursery.cancel_scope.cancel()


async def assert_still_linked(a: Node, b: Node) -> None:
    assert a.links is not None
    assert b.node_id in a.links.links


NOBODY = "nobody"
# A Python that another user may run (the venv's may live under /root).
PYTHON_FOR_NOBODY = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                          if os.access(p, os.X_OK) and os.stat(p).st_mode & 0o001), "")


def as_nobody(code: str, sock_path: Path) -> subprocess.CompletedProcess[str]:
    user = pwd.getpwnam(NOBODY)

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return subprocess.run([PYTHON_FOR_NOBODY, "-c", code, str(sock_path)], preexec_fn=drop,
                          capture_output=True, text=True, timeout=30, check=False)


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect-failed", exc.errno); sys.exit(0)
s.sendall(b'{"op":"status"}\\n')
print("reply", s.recv(65536).decode().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
@pytest.mark.skipif(not PYTHON_FOR_NOBODY, reason="no python3 that user nobody may run")
async def test_a_client_of_another_user_is_refused(short_tmp: Path) -> None:
    os.chmod(short_tmp, 0o755)  # let nobody reach the socket's directory
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            path = a.config.socket_path
            res = await trio.to_thread.run_sync(as_nobody, CLIENT, path)
            assert res.stdout.startswith("connect-failed 13"), res  # EACCES: mode 0600
            os.chmod(path, 0o666)  # even when the file mode lets it in,
            res = await trio.to_thread.run_sync(as_nobody, CLIENT, path)
            reply = msgspec.json.decode(res.stdout.split(" ", 1)[1])
            assert reply["error"]["code"] == "forbidden", res  # the peer credentials do not
            assert "node_id" not in reply
            assert a.status_info().api.clients_forbidden == 1
            # The node's own user is served as usual.
            async with await open_client(path) as me:
                assert (await me.status())["name"] == "a"


def test_keygen_refuses_to_overwrite_and_writes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "net.key"
    res = subprocess.run([sys.executable, "-m", "p2pnode.cli", "keygen", "--network", str(path)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res
    assert os.stat(path).st_mode & 0o777 == 0o600
    tag = NetworkKey.load(path).tag
    assert tag in res.stdout
    assert path.read_bytes().decode() not in res.stdout + res.stderr
    again = subprocess.run([sys.executable, "-m", "p2pnode.cli", "keygen", "--network",
                            str(path)], capture_output=True, text=True, check=False)
    assert again.returncode == 1
    assert "not overwriting" in again.stderr
    os.chmod(path, 0o644)
    from p2pnode.errors import ConfigError

    with pytest.raises(ConfigError, match="open to group or others"):
        NetworkKey.load(path)
