"""What an operator runs the node with: start-up lines printed once, GET /healthz, and
SIGHUP reloading what can change at run time. Real nodes on loopback, mDNS off."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from pathlib import Path

import pytest
import trio

from p2pnode.cli.metrics import serve_metrics
from p2pnode.errors import ConfigError
from p2pnode.testing import wait_until

from .conftest import loopback_config, running_nodes
from .test_cli import spawn
from .test_link_failures import free_port
from .test_metrics import http


def node_args(base: Path, *more: str) -> list[str]:
    return ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--socket", str(base / "a.sock"),
            "--data-dir", str(base / "a"), *more]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_start_up_lines_are_printed_once(short_tmp: Path, log_format: str) -> None:
    args = node_args(short_tmp, "--metrics", "127.0.0.1:0", "--log-format", log_format)
    with trio.fail_after(20):
        async with spawn(args) as a:
            port = int((await a.wait_line(r"metrics on http://127\.0\.0\.1:(\d+)/")).group(1))
            health = await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert health.startswith(b"HTTP/1.1 200 OK\r\n")  # --health-min-links 0
            a.process.terminate()
            assert await a.process.wait() == 0
            await a.wait_line("signal 15: leaving")
    for what in ("listening on", "open network: links are encrypted", "metrics on http"):
        assert sum(what in line for line in a.seen) == 1, (what, a.seen)
    if log_format == "json":
        lines = [json.loads(line) for line in a.seen]
        assert [x["level"] for x in lines if "listening on" in x["message"]] == ["notice"]
    else:
        assert sum(line.startswith("p2pnode: ") for line in a.seen) == 3


async def test_healthz_needs_the_socket_and_enough_links(short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,), \
                trio.open_nursery() as nursery:
            _host, port = await nursery.start(serve_metrics, "127.0.0.1", 0, a.status_info,
                                              lambda: a.health(1))

            async def healthz() -> tuple[str, dict[str, object]]:
                head, _, body = (await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")) \
                    .partition(b"\r\n\r\n")
                assert b"Content-Type: application/json" in head
                return head.split(b"\r\n")[0].decode(), json.loads(body)

            status, body = await healthz()
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert body["reason"] == "0 links, fewer than --health-min-links 1"
            b_cfg = loopback_config(short_tmp, "b", peers=(a.listen_addr,))  # type: ignore[arg-type]
            async with running_nodes([b_cfg]):
                await wait_until(lambda: len(a.peers_info()) == 1, poll=0.01)
                assert await healthz() == ("HTTP/1.1 200 OK", {
                    "status": "ok", "node_id": a.node_hex, "links": 1, "min_links": 1})
                a.config.socket_path.unlink()  # a tmp cleaner took it: apps cannot connect
                status, body = await healthz()
                assert status.startswith("HTTP/1.1 503")
                assert str(body["reason"]).startswith(f"the socket {a.config.socket_path} is gone")
            assert (await http(port, b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 405")
            nursery.cancel_scope.cancel()


async def test_reconfigure_dials_new_peers_and_lets_removed_ones_go(short_tmp: Path) -> None:
    old, new = free_port(), free_port()
    cfg = loopback_config(short_tmp, "a", peers=(("127.0.0.1", old),), redial_initial=0.01,
                          redial_max=0.02)
    with trio.fail_after(20):
        async with running_nodes([cfg]) as (a,):
            def count(port: int) -> int:
                record = a.failures.records.get(f"127.0.0.1:{port}")
                return record.count if record else 0

            await wait_until(lambda: count(old) >= 2, poll=0.01)
            done = a.reconfigure(dataclasses.replace(
                a.config, peers=(("127.0.0.1", new),), history_age=100.0, name="renamed"))
            assert (done.peers_added, done.peers_removed) == (
                (f"127.0.0.1:{new}",), (f"127.0.0.1:{old}",))
            assert done.applied["history_age"] == (300.0, 100.0)
            assert done.restart == {"name": ("a", "renamed")}
            assert a.router.history.max_age == 100.0
            assert a.config.name == "a"
            stopped_at = count(old)
            await wait_until(lambda: count(new) >= 5, poll=0.01)
            assert count(old) == stopped_at
            # Live values that do not fit the values that stay: refused, nothing changed.
            with pytest.raises(ConfigError, match="history_age must be at most seen_ttl"):
                a.reconfigure(dataclasses.replace(a.config, seen_ttl=900.0, history_age=800.0))
            assert a.config.history_age == 100.0
            assert a.router.history.max_age == 100.0


async def test_sighup_reloads_log_level_and_peers_and_names_restart_only_changes(
        short_tmp: Path) -> None:
    old, new = free_port(), free_port()
    conf = short_tmp / "p2pnode.toml"
    conf.write_text(f'name = "a"\nlog_level = "warning"\npeers = ["127.0.0.1:{old}"]\n')
    with trio.fail_after(20):
        async with spawn(node_args(short_tmp, "--config", str(conf))) as a:
            await a.wait_line(f"cannot link to 127.0.0.1:{old}: connection refused")
            conf.write_text(f'name = "b"\nlog_level = "info"\npeers = ["127.0.0.1:{new}"]\n'
                            "history_age = 100.0\n")
            a.process.send_signal(signal.SIGHUP)
            line = (await a.wait_line("reloaded the settings: .*")).group(0)
            assert "history_age 300.0 -> 100.0" in line
            assert f"peers: dialling 127.0.0.1:{new}; no longer redialling 127.0.0.1:{old}" \
                in line
            assert "log_level warning -> info" in line
            assert line.endswith("changed but not applied until a restart: name")
            await a.wait_line(f"cannot link to 127.0.0.1:{new}: connection refused")
            conf.write_text("peers = 3\n")
            a.process.send_signal(signal.SIGHUP)
            await a.wait_line(re.escape("reload failed, the settings stay as they were: "
                                        f"{conf}: peers must be a list of strings"))
            a.process.terminate()
            assert await a.process.wait() == 0
            # An info line: only shown because the reload lowered the level to info.
            await a.wait_line("signal 15: leaving")
    reloaded = next(i for i, line in enumerate(a.seen) if "reloaded the settings" in line)
    assert not any(f"cannot link to 127.0.0.1:{old}" in line for line in a.seen[reloaded:])
