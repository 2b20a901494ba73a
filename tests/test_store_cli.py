"""``p2pnode store`` against real nodes (TCP, a real Unix socket, the command run as a
process), the stopped node's file read in place, the errors a user sees, and the
``store`` section of ``status`` and ``/metrics`` as messages are stored."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.api.protocol import StoreOp
from p2pnode.api.waiting import store_reply
from p2pnode.cli.metrics import render
from p2pnode.cli.statusview import summary
from p2pnode.client import ApiReplyError, open_client
from p2pnode.errors import LocalError
from p2pnode.node import Node
from p2pnode.node import storing as storing_module
from p2pnode.store.db import MessageStore

from .conftest import loopback_config, running_nodes
from .test_cli import P2PNODE
from .test_store_db import rows
from .test_store_report import OTHER, files_of


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``p2pnode ARGS`` to its end."""
    return await trio.run_process([*P2PNODE, *args], capture_stdout=True,
                                  capture_stderr=True, check=False)


async def publish_stored(node: Node, topic: str, count: int) -> None:
    """Publish ``count`` messages through the node's socket, each confirmed, and wait
    until every batch queued for the store is written."""
    async with await open_client(node.config.socket_path) as client:
        for i in range(count):
            await client.publish(topic, f"m{i}", wait=True)
    service = node.storing.service
    assert service is not None
    await service.wait_stored(service.queued)


def metric(text: str, name: str) -> float:
    """The value of the sample ``name`` (without labels) in a /metrics page."""
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


def prepare_store(data: Path) -> None:
    """A data directory whose store holds 2 batches of another origin (3 messages each,
    published a minute ago, their frames not batches: unreadable at start) and the
    durable subscription ``billing`` at position 2."""
    data.mkdir(mode=0o700)
    store = MessageStore(data / "store.sqlite3")
    store.append(rows(2, origin=OTHER, age=time.time() - 60))
    store.put_durable("billing", ["orders/#"], 2)
    store.close()


async def test_store_asks_the_node_then_reads_the_stopped_nodes_file(short_tmp: Path) -> None:
    data = short_tmp / "a"
    prepare_store(data)
    config = loopback_config(short_tmp, "a", mesh_interval=0.0)
    sock = str(config.socket_path)
    with trio.fail_after(60):
        async with running_nodes([config]) as (node,):
            await publish_stored(node, "orders/new", 3)
            res = await cli("store", "--socket", sock, "--json")
            assert res.returncode == 0, res.stderr
            got = json.loads(res.stdout)
            assert (got["source"], got["enabled"], got["sync"]) == ("node", True, "normal")
            assert (got["messages"], got["rows"], got["unreadable"]) == (9, 5, 2)
            assert got["origins"] == [
                {"origin": OTHER.hex(), "messages": 6},
                {"origin": node.node_hex, "messages": 3, "name": "a"}]
            (billing,) = got["subscriptions"]
            assert (billing["name"], billing["acked"], billing["lag"]) == ("billing", 2, 3)
            res = await cli("store", "--socket", sock)
            text = res.stdout.decode()
            assert res.returncode == 0, res.stderr
            assert re.search(r"^messages  9 in 5 batches \(positions 1-5\), .* of 256.0 MiB, "
                             r"kept 1d after publication$", text, re.M), text
            assert re.search(r"^durable   1 subscription\n +NAME +TOPICS +POSITION +LAG",
                             text, re.M), text
            assert re.search(r"^ +billing +orders/# +2 +3 +0 ", text, re.M), text
            assert "restored  0 batches into history at start (2 unreadable" in text
            res = await cli("store", "--data-dir", str(data))
            assert res.returncode == 1
            assert b"a node runs with this data directory; ask it" in res.stderr
            res = await cli("status", "--socket", sock, "--interval", "0")
            assert re.search(r"^store     9 messages in 5 batches, .*; 1 durable subscription;",
                             res.stdout.decode(), re.M), res.stdout
        before = files_of(data)
        res = await cli("store", "--data-dir", str(data), "--json")
        assert res.returncode == 0, res.stderr
        offline = json.loads(res.stdout)
        assert offline["source"] == "file"
        for key in ("messages", "rows", "last_pos", "origins_total", "durables"):
            assert offline[key] == got[key], key
        assert files_of(data) == before  # read, never changed
        res = await cli("store", "--file", str(data / "store.sqlite3"))
        assert "read from the file (the node is stopped)" in res.stdout.decode()
        res = await cli("store", "--socket", sock)
        assert res.returncode == 1
        assert b"no node at the socket" in res.stderr
        assert b"p2pnode store --data-dir DIR" in res.stderr


async def test_status_and_metrics_count_what_is_stored(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a", mesh_interval=0.0)
    with trio.fail_after(30):
        async with running_nodes([config]) as (node,):
            first = node.status_info()
            assert first.store is not None
            assert (first.store.enabled, first.store.messages, first.store.rows) == (True, 0, 0)
            assert first.store.path == str(short_tmp / "a" / "store.sqlite3")
            await publish_stored(node, "t", 4)
            status = node.status_info()
            st = status.store
            assert (st.messages, st.rows, st.queued, st.committed, st.pending) == (4, 4, 4, 4, 0)
            assert st.bytes > 0
            assert st.writes >= 1
            assert not st.failing
            assert st.error is None
            page = render(status)
            assert metric(page, "p2pnode_store_enabled") == 1
            assert metric(page, "p2pnode_store_messages") == 4
            assert metric(page, "p2pnode_store_queued_total") == 4
            assert metric(page, "p2pnode_store_bytes") == st.bytes
            assert metric(page, "p2pnode_store_max_age_seconds") == 86400
            assert 'p2pnode_store_info{sync="normal"} 1' in page
            assert "store.sqlite3" not in page  # the path is not exported
            await publish_stored(node, "t", 2)
            assert metric(render(node.status_info()), "p2pnode_store_messages") == 6
            async with await open_client(config.socket_path) as client:
                reply = await client.status()
            assert reply["store"]["messages"] == 6
            assert "store     6 messages in 6 batches" in summary(reply)


async def test_a_node_without_a_store_says_so(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a", store="none")
    with trio.fail_after(30):
        async with running_nodes([config]) as (node,):
            status = node.status_info()
            assert status.store is not None
            assert not status.store.enabled
            assert metric(render(status), "p2pnode_store_enabled") == 0
            res = await cli("store", "--socket", str(config.socket_path))
            assert res.returncode == 0, res.stderr
            assert res.stdout.startswith(b"store     off: this node keeps no message store")
            res = await cli("store", "--socket", str(config.socket_path), "--json")
            assert json.loads(res.stdout)["enabled"] is False
            async with await open_client(config.socket_path) as client:
                assert "store     off (--store none)" in summary(await client.status())


@pytest.mark.parametrize(("every", "share", "cached"), [
    (3600.0, 0.0, True),  # within REPORT_EVERY of the last read
    (0.0, 1e6, True),  # within REPORT_SHARE times as long as the last read took
    (0.0, 0.0, False),
])
async def test_reports_are_read_from_the_file_not_too_often(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch, every: float, share: float,
        cached: bool) -> None:
    config = loopback_config(short_tmp, "a", mesh_interval=0.0)
    monkeypatch.setattr(storing_module, "REPORT_EVERY", every)
    monkeypatch.setattr(storing_module, "REPORT_SHARE", share)
    with trio.fail_after(30):
        async with running_nodes([config]) as (node,):
            async with await open_client(config.socket_path) as client:
                first = await client.request({"op": "store"})
                await publish_stored(node, "t", 2)
                again = await client.request({"op": "store"})
                assert first["messages"] == 0
                assert again["messages"] == (0 if cached else 2)
                assert again["queued"] == 2  # the status part is always fresh
                node.storing._report = None  # as when its time is up
                fresh = await client.request({"op": "store"})
                assert fresh["messages"] == 2


async def test_a_store_that_cannot_be_read_answers_store_failed(short_tmp: Path) -> None:
    config = loopback_config(short_tmp, "a", mesh_interval=0.0)
    with trio.fail_after(30):
        async with running_nodes([config]) as (node,):
            service = node.storing.service
            assert service is not None
            await service.call(service.store.close)  # as when the node stops
            async with await open_client(config.socket_path) as client:
                with pytest.raises(ApiReplyError) as caught:
                    await client.request({"op": "store", "id": 4})
                assert caught.value.code == "store_failed"
                assert "the node is stopping" in caught.value.message
                assert (await client.status())["store"]["enabled"]  # status still answers


async def test_store_reply_turns_a_failure_into_an_error_reply() -> None:
    class Broken:
        async def store_info(self) -> dict[str, Any]:
            raise LocalError("the disk went away")

    err = await store_reply(Broken(), StoreOp(id=7))
    assert not isinstance(err, bytes)
    assert (err.code, err.req_id, err.message) == ("store_failed", 7, "the disk went away")


@pytest.mark.parametrize(("args", "status", "message"), [
    (["--socket", "{tmp}/none.sock"], 1,
     "no node at the socket {tmp}/none.sock (No such file or directory); is `p2pnode run` "
     "running, and is --socket right? (to read a stopped node's store: p2pnode store "
     "--data-dir DIR, or --file PATH)"),
    (["--data-dir", "{tmp}/nope"], 1, "--data-dir {tmp}/nope: no such directory"),
    (["--data-dir", "{tmp}"], 1, "--data-dir {tmp}: no message store there"),
    (["--file", "{tmp}/nope.sqlite3"], 1, "--file {tmp}/nope.sqlite3: no such file"),
    (["--file", "{tmp}/junk"], 1,
     "{tmp}/junk: not a p2pnode message store that can be read: the file is corrupted or "
     "not a p2pnode store (file is not a database)"),
    (["--file", "{tmp}/junk", "--socket", "{tmp}/a.sock"], 1,
     "--socket asks a running node, --data-dir and --file read a stopped node's file: give "
     "one or the other"),
    (["--file", "{tmp}/junk", "--data-dir", "{tmp}"], 2,
     "argument --data-dir: not allowed with argument --file"),
])
async def test_store_errors_say_what_to_do(short_tmp: Path, args: list[str], status: int,
                                           message: str) -> None:
    (short_tmp / "junk").write_bytes(b"not a database, only text" * 100)
    with trio.fail_after(30):
        res = await cli("store", *(a.format(tmp=short_tmp) for a in args))
    assert res.returncode == status
    assert message.format(tmp=short_tmp) in res.stderr.decode()
    assert res.stdout == b""
