"""A node that cannot link says why at the default log level, in words that name the
fix (another network: both tags; TLS against --insecure: which side runs what), once
and then rate-limited; link records carry structured fields; `peers` and `status`
show the last failure, the peer's listen address and the round-trip time.
Real nodes on loopback only, mDNS off."""

from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.cli.commands import _peer_table
from p2pnode.cli.logs import JsonFormatter, KeyValueFormatter
from p2pnode.config import format_hostport
from p2pnode.identity import generate_network_key
from p2pnode.net.failures import Failure, FailureLog
from p2pnode.node import Node
from p2pnode.testing import start_memory_mesh, wait_linked, wait_until

from .conftest import loopback_config, running_nodes

FIX_TLS = "run both with or both without --insecure"


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failures(caplog: pytest.LogCaptureFixture, reason: str,
             direction: str | None = None) -> list[logging.LogRecord]:
    """The failure records logged with ``reason`` (and ``direction``)."""
    return [r for r in caplog.records if getattr(r, "reason", None) == reason
            and direction in (None, getattr(r, "direction", None))]


def listen(node: Node) -> str:
    assert node.listen_addr is not None
    return format_hostport(*node.listen_addr)


def assert_no_raw_tls_text(caplog: pytest.LogCaptureFixture) -> None:
    """OpenSSL's words stay in the ``detail`` field, out of every message."""
    for record in caplog.records:
        text = record.getMessage()
        assert "[SSL" not in text, text
        assert "WRONG_VERSION" not in text, text


async def test_nodes_of_different_networks_name_both_tags(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The certificates tell (the TLS server name, the issuer's name). (--insecure with a
    # network key is refused at start-up: config/file.py.)
    insecure = False
    caplog.set_level(logging.INFO, logger="p2pnode")
    key_a, key_b = short_tmp / "a.key", short_tmp / "b.key"
    tag_a, tag_b = generate_network_key(key_a).tag, generate_network_key(key_b).tag
    a_cfg = loopback_config(short_tmp, "a", network_key=key_a, insecure=insecure)
    with trio.fail_after(20):
        async with running_nodes([a_cfg]) as (a,):
            b_cfg = loopback_config(short_tmp, "b", network_key=key_b, insecure=insecure,
                                    peers=(a.listen_addr,))  # type: ignore[arg-type]
            async with running_nodes([b_cfg]):
                await wait_until(lambda: bool(failures(caplog, "network_mismatch", "out")
                                              and failures(caplog, "network_mismatch", "in")),
                                 poll=0.02)
    (out, *_) = failures(caplog, "network_mismatch", "out")  # b, which dialled
    assert out.levelno == logging.WARNING
    assert out.getMessage().startswith(
        f"peer {listen(a)} is on another network (network tag {tag_a}, ours {tag_b}): "
        "give both the same --network-key; retrying in ")
    assert out.peer_network == tag_a  # type: ignore[attr-defined]
    if not insecure:
        assert "CERTIFICATE_VERIFY_FAILED" in out.detail  # type: ignore[attr-defined]
    (inbound, *_) = failures(caplog, "network_mismatch", "in")  # a, which was dialled
    assert inbound.levelno == logging.WARNING
    assert f"is on another network (network tag {tag_b}, ours {tag_a}): give both the same " \
           "--network-key" in inbound.getMessage()
    assert_no_raw_tls_text(caplog)


@pytest.mark.parametrize("dialler_insecure", [True, False], ids=["insecure-dials", "tls-dials"])
async def test_tls_and_insecure_nodes_say_how_to_fix_it(
        short_tmp: Path, caplog: pytest.LogCaptureFixture, dialler_insecure: bool) -> None:
    caplog.set_level(logging.INFO, logger="p2pnode")
    with trio.fail_after(20):
        a_cfg = loopback_config(short_tmp, "a", insecure=not dialler_insecure)
        async with running_nodes([a_cfg]) as (a,):
            b_cfg = loopback_config(short_tmp, "b", insecure=dialler_insecure,
                                    peers=(a.listen_addr,))  # type: ignore[arg-type]
            async with running_nodes([b_cfg]):
                await wait_until(lambda: bool(failures(caplog, "peer_tls")
                                              and failures(caplog, "peer_insecure")), poll=0.02)
    insecure_side, tls_side = failures(caplog, "peer_tls")[0], failures(caplog, "peer_insecure")[0]
    assert insecure_side.direction == ("out" if dialler_insecure else "in")  # type: ignore[attr-defined]
    assert tls_side.direction == ("in" if dialler_insecure else "out")  # type: ignore[attr-defined]
    assert "speaks TLS, this node runs --insecure; " + FIX_TLS in insecure_side.getMessage()
    assert "runs --insecure (plaintext), this node runs TLS; " + FIX_TLS in tls_side.getMessage()
    assert {insecure_side.levelno, tls_side.levelno} == {logging.WARNING}
    if not dialler_insecure:
        assert tls_side.getMessage().startswith(f"peer {listen(a)} runs --insecure")
    assert_no_raw_tls_text(caplog)


async def test_an_unreachable_peer_is_warned_once_then_rate_limited(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    cfg = loopback_config(short_tmp, "a", peers=(("127.0.0.1", port),), redial_initial=0.01,
                          redial_max=0.02)
    with trio.fail_after(20):
        async with running_nodes([cfg]) as (a,):
            a.failures.interval = 10.0  # 60 s in a real node

            def count() -> int:
                record = a.failures.records.get(addr)
                return record.count if record else 0

            await wait_until(lambda: count() >= 10, poll=0.01)
            warned = failures(caplog, "connection_refused")
            assert len(warned) == 1
            (first,) = warned
            a.failures.interval = 0.2  # the next line comes after this long, with a count
            await wait_until(lambda: len(failures(caplog, "connection_refused")) == 2, poll=0.02)
    assert first.levelno == logging.WARNING
    assert first.getMessage().startswith(
        f"cannot link to {addr}: connection refused (no node listens there: is it running, "
        "and is the port right?); retrying in ")
    assert first.addr == addr
    assert first.direction == "out"
    second = failures(caplog, "connection_refused")[1]
    assert re.search(r"; retrying in [\d.]+ s \(\d+ failures in the last \d+ s\)$",
                     second.getMessage())
    assert second.failures > 10  # type: ignore[attr-defined]


class NoDns(trio.abc.HostnameResolver):
    """A resolver that knows no name (numeric addresses never reach it): no DNS traffic."""

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None,
                          family: int = 0, type: int = 0, proto: int = 0,
                          flags: int = 0) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int],
                          flags: int) -> tuple[str, str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_an_unresolvable_peer_says_so(short_tmp: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    trio.socket.set_custom_hostname_resolver(NoDns())
    cfg = loopback_config(short_tmp, "a", peers=(("nowhere.invalid", 7420),))
    with trio.fail_after(10):
        async with running_nodes([cfg]):
            await wait_until(lambda: bool(failures(caplog, "unresolvable")), poll=0.01)
    (record,) = failures(caplog, "unresolvable")
    assert record.getMessage().startswith(
        "cannot link to nowhere.invalid:7420: the name 'nowhere.invalid' does not resolve "
        "(Name or service not known); retrying in ")


def test_failure_log_rate_limits_per_address() -> None:
    now = [0.0]
    flog = FailureLog(interval=60.0, clock=lambda: now[0])
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    logger = logging.getLogger("p2pnode.links")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        refused = Failure("connection_refused", "cannot link to x:1")
        for _ in range(5):
            flog.report("x:1", refused, direction="out", retry_in=1.0)
            now[0] += 1.0
        assert len(lines) == 1
        flog.report("y:2", refused, direction="out")  # another address: its own line
        assert len(lines) == 2
        other = Failure("network_mismatch", "other net")
        flog.report("x:1", other, direction="out")
        assert len(lines) == 3  # another reason: at once
        flog.report("x:1", other, direction="out")
        flog.report("x:1", other, direction="out")
        now[0] += 61.0
        flog.report("x:1", other, direction="out")
        assert len(lines) == 4
        assert lines[-1].getMessage() == "other net (3 failures in the last 61 s)"
        flog.linked("x:1")  # a link opened: the next failure is news again
        flog.report("x:1", other, direction="out")
        assert len(lines) == 5
        assert lines[-1].failures == 1
        flog.report("h", Failure("tls_failed", "a scanner?"), direction="in")
        assert lines[-1].levelno == logging.INFO  # inbound noise is not a warning
        flog.report("h", Failure("duplicate", "routine"), direction="in")
        assert len(lines) == 6
        assert flog.last(addrs=("x:1",)) is not None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_link_records_carry_structured_fields(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2pnode")
    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            b_cfg = loopback_config(short_tmp, "b", peers=(a.listen_addr,))  # type: ignore[arg-type]
            async with running_nodes([b_cfg]) as (b,):
                await wait_until(lambda: len(a.peers_info()) == len(b.peers_info()) == 1,
                                 poll=0.01)
                await b.stop()
            await wait_until(lambda: any(getattr(r, "link", None) == "down"
                                         and getattr(r, "peer_name", None) == "b"
                                         for r in caplog.records), poll=0.01)
    ups = {r.direction: r for r in caplog.records  # type: ignore[attr-defined]
           if getattr(r, "link", None) == "up"}
    up = ups["in"]  # on a
    assert (up.peer_id, up.peer_name, up.listen) == (  # type: ignore[attr-defined]
        b.node_hex, "b", listen(b))
    assert up.addr.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert ups["out"].addr == listen(a)
    assert ups["out"].static is True
    down = next(r for r in caplog.records if getattr(r, "link", None) == "down"
                and getattr(r, "peer_name", None) == "b")  # on a
    assert (down.peer_name, down.reason) == ("b", "peer_left")  # type: ignore[attr-defined]
    obj = json.loads(JsonFormatter().format(up))
    assert {k: obj[k] for k in ("link", "peer_id", "peer_name", "direction")} == {
        "link": "up", "peer_id": b.node_hex, "peer_name": "b", "direction": "in"}
    text = KeyValueFormatter().format(down)
    assert f'message="link down: b ({b.node_hex[:8]}): peer_left"' in text
    assert "link=down" in text
    assert "reason=peer_left" in text


async def test_peers_show_listen_address_rtt_and_last_failure(short_tmp: Path) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    fast = {"ping_interval": 0.05, "link_timeout": 2.0, "peer_pings_per_s": 100.0}
    b_cfg = loopback_config(short_tmp, "b", peers=(("127.0.0.1", port),), **fast)
    with trio.fail_after(20):
        async with running_nodes([b_cfg]) as (b,):
            await wait_until(lambda: b.failures.last(addrs=(addr,)) is not None, poll=0.01)
            a_cfg = loopback_config(short_tmp, "a", listen_port=port, **fast)
            async with running_nodes([a_cfg]) as (a,):
                await wait_until(lambda: [p["rtt_ms"] is not None for p in a.peers_info()
                                          + b.peers_info()] == [True, True], poll=0.01)
                (seen_by_a,) = a.peers_info()
                (seen_by_b,) = b.peers_info()
                status = b.status_info()
    # a sees b's inbound connection: its address has an ephemeral port, b listens elsewhere.
    assert seen_by_a["listen"] == listen(b) != seen_by_a["addr"]
    assert 0 < seen_by_a["rtt_ms"] < 1000
    failed = seen_by_b["last_failure"]
    assert (failed["reason"], failed["addr"], failed["direction"]) == (
        "connection_refused", addr, "out")
    assert failed["count"] >= 1
    assert failed["ago_s"] >= 0
    assert seen_by_a["last_failure"] is None
    table = _peer_table([seen_by_a, seen_by_b])
    assert listen(b) in table
    assert seen_by_a["addr"] not in table
    assert f"{seen_by_a['rtt_ms']:.1f} ms" in table
    assert "connection_refused, " in table
    assert status.links is not None
    (recent,) = status.links.failures
    assert (recent.addr, recent.reason) == (addr, "connection_refused")


async def test_a_peer_over_its_rate_limit_is_logged_with_its_fields(
        caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock) -> None:
    # b takes at most 4 batches a second (bursts of 1) from a peer: a sends 20 at once.
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b = await start_memory_mesh(nursery, [(0, 1)], 2, peer_batches_per_s=4.0)
            await wait_linked([a, b], [(0, 1)])
            for i in range(20):
                a.publish("t", b"x%d" % i)
                a.flush()
            await wait_until(lambda: b.rate_limited >= 10)
            nursery.cancel_scope.cancel()
    (record,) = failures(caplog, "rate_limited")  # once, not once per dropped batch
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"link n0 ({a.node_hex[:8]}) sends over its rate limit (4 batches/s, ")
    assert (record.peer_id, record.peer_name, record.direction) == (  # type: ignore[attr-defined]
        a.node_hex, "n0", "in")
    assert record.dropped >= 1  # type: ignore[attr-defined]
