"""The message store through real ``p2pnode run`` processes on loopback (``--no-mdns``):
a damaged store file stops the node with one clear line, ``kill -9`` in the middle of a
publish burst loses no confirmed message, and a real full file system (a small tmpfs in
a private mount namespace, as root) fails publishes clearly until there is room."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.store.db import MessageStore, Row
from p2pnode.wire.messages import Batch, decode_kept_body, decode_message

from .test_cli import P2PNODE, Proc, reap, spawn

LISTENING = r"listening on 127\.0\.0\.1:(\d+)"


def run_args(base: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", name,
            "--socket", str(base / f"{name}.sock"), "--data-dir", str(base / name), *extra]


def stored_payloads(path: Path) -> set[bytes]:
    """The payloads of every message in the store file ``path`` (its node stopped)."""
    store = MessageStore(path)
    try:
        rows = store.after(0, 1 << 30)
    finally:
        store.close()
    out: set[bytes] = set()
    for row in rows:
        batch = decode_message(row.frame)
        assert isinstance(batch, Batch)
        out.update(item.data for item in decode_kept_body(batch.body).items)
    return out


# -- a damaged store file -------------------------------------------------------------


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def damaged_pages(path: Path) -> None:
    """A real store, then some of its pages overwritten (a disk that went bad)."""
    store = MessageStore(path)
    store.append([Row(bytes(16), 1, i + 1, i.to_bytes(16, "big"), i.to_bytes(16, "big"),
                      i.to_bytes(16, "big"), 1e9 + i, 1, b"p" * 300) for i in range(2000)])
    store.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data), 4096 * 7):
        data[offset:offset + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))


def directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("damage", [garbage, damaged_pages, directory])
def test_a_damaged_store_stops_the_node_with_one_clear_line(
        short_tmp: Path, damage: Callable[[Path], None]) -> None:
    data_dir = short_tmp / "a"
    data_dir.mkdir(mode=0o700)
    path = data_dir / "store.sqlite3"
    damage(path)
    before = path.read_bytes() if path.is_file() else None
    res = subprocess.run([*P2PNODE, *run_args(short_tmp, "a")], capture_output=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"p2pnode: error: message store {path} cannot be used: ")
    assert f"mv {path} {path}.broken" in line
    assert "--store none" in line
    assert (path.read_bytes() if path.is_file() else None) == before  # never wiped


# -- kill -9 in a publish burst ---------------------------------------------------------


class Burst:
    """Publishes ``m000000``, ``m000001``, ... with an ``ok`` asked for each, at most
    ``window`` unanswered, until the connection ends; ``confirmed`` holds the payloads
    whose ``ok`` came."""

    def __init__(self, socket_path: Path, window: int = 1000) -> None:
        self.path = socket_path
        self.window = window
        self.sent = 0
        self.answered = 0
        self.confirmed: set[bytes] = set()
        self.reached = trio.Event()  # set once ``goal`` are confirmed, and more sent
        self.goal = 0
        self._progress = trio.Event()

    async def run(self, goal: int) -> None:
        self.goal = goal
        stream = await trio.open_unix_socket(str(self.path))
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, nursery.cancel_scope)
            try:
                while True:
                    while self.sent - self.answered > self.window:
                        await self._progress.wait()
                    lines = [b'{"op":"publish","topic":"burst","data":"m%06d","id":%d}\n'
                             % (i, i) for i in range(self.sent, self.sent + 100)]
                    await stream.send_all(b"".join(lines))
                    self.sent += 100
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the node was killed

    async def _read(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        buf = b""
        try:
            while data := await stream.receive_some(1 << 16):
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    reply = json.loads(line)
                    assert reply["ok"], reply
                    self.confirmed.add(b"m%06d" % reply["id"])
                self.answered += len(lines)
                self._progress.set()
                self._progress = trio.Event()
                if len(self.confirmed) >= self.goal and self.sent > self.answered:
                    # With publishes not confirmed yet: kill time. Read no more, so that
                    # what the app saw confirmed stays short of what it sent whatever
                    # the node answers before the kill lands.
                    self.reached.set()
                    return
        except trio.BrokenResourceError:
            pass
        scope.cancel()


class Received:
    """The payloads a subscriber got."""

    def __init__(self) -> None:
        self.got: set[bytes] = set()
        self.changed = trio.Event()

    def add(self, payloads: list[bytes]) -> None:
        self.got.update(payloads)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, wanted: set[bytes]) -> None:
        while not wanted <= self.got:
            await self.changed.wait()


async def subscriber(socket_path: Path, received: Received, task_status: Any) -> None:
    """Subscribe to ``burst`` and hand each read's payloads to ``received``."""
    stream = await trio.open_unix_socket(str(socket_path))
    async with stream:
        await stream.send_all(b'{"op":"subscribe","topics":["burst"]}\n')
        buf = b""
        while b"\n" not in buf:
            buf += await stream.receive_some(1 << 16)
        reply, buf = buf.split(b"\n", 1)
        assert json.loads(reply)["ok"]
        task_status.started()
        while data := await stream.receive_some(1 << 16):
            *lines, buf = (buf + data).split(b"\n")
            events = [json.loads(line) for line in lines]
            assert all(e.get("event") == "message" for e in events), events  # none dropped
            received.add([e["data"].encode() for e in events])


async def test_kill_9_in_a_publish_burst_loses_no_confirmed_message(short_tmp: Path) -> None:
    received = Received()
    burst = Burst(short_tmp / "a.sock")
    with trio.fail_after(40):
        async with spawn(run_args(short_tmp, "b")) as b, trio.open_nursery() as nursery:
            port = (await b.wait_line(LISTENING)).group(1)
            await nursery.start(subscriber, short_tmp / "b.sock", received)
            a_args = run_args(short_tmp, "a", "--peer", f"127.0.0.1:{port}")
            async with spawn(a_args) as a:
                await a.wait_line("link up: b")
                nursery.start_soon(burst.run, 3000)
                await burst.reached.wait()
                a.process.kill()  # in the middle of the burst: SIGKILL
                await a.process.wait()
            assert burst.sent > len(burst.confirmed) >= 3000  # some were not confirmed
            async with spawn(a_args) as a:  # the same node, back from its store
                await a.wait_line("link up: b")
                with trio.fail_after(10):
                    await received.wait_for(burst.confirmed)  # through b's subscriber
                a.process.terminate()
                assert await a.process.wait() == 0
            nursery.cancel_scope.cancel()
    missing = burst.confirmed - stored_payloads(short_tmp / "a" / "store.sqlite3")
    assert not missing, f"{len(missing)} confirmed messages not in a's store"


# -- a real full file system ------------------------------------------------------------


def can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root: a small tmpfs in a private mount namespace (unshare -m)"
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "needs unshare and nsenter (util-linux)"
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                         capture_output=True, timeout=10)
    return None if res.returncode == 0 else f"unshare -m refused: {res.stderr.decode()}"


async def ask(path: Path, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send ``requests`` on one connection and return their replies."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        buf = b""
        while buf.count(b"\n") < len(requests):
            data = await stream.receive_some(1 << 16)
            assert data, "the node closed the connection"
            buf += data
    return [json.loads(line) for line in buf.splitlines()]


async def test_a_real_full_disk_fails_publishes_until_there_is_room(short_tmp: Path) -> None:
    if (why := can_mount()) is not None:
        pytest.skip(why)
    mnt = short_tmp / "small"
    mnt.mkdir()
    store = mnt / "store.sqlite3"
    node = [*P2PNODE, *run_args(short_tmp, "a", "--store", str(store))]
    script = (f"mount -t tmpfs -o size=768k p2pt-full {mnt} && dd if=/dev/zero "
              f"of={mnt}/filler bs=1k count=256 2>/dev/null && exec \"$@\"")
    sock = short_tmp / "a.sock"
    process = await trio.lowlevel.open_process(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *node],
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with trio.fail_after(40):
            await Proc(process).wait_line(LISTENING)
            big = "x" * 8000
            for i in range(200):  # 512 KiB of room: full long before 1.6 MB
                (reply,) = await ask(sock, {"op": "publish", "topic": "t", "data": big,
                                            "id": i})
                if not reply["ok"]:
                    break
            assert reply["error"]["code"] == "store_full", reply
            assert str(store) in reply["error"]["message"]
            status, sub = await ask(sock, {"op": "status"}, {"op": "subscribe",
                                                              "topics": ["t"]})
            assert status["ok"]
            assert sub["ok"]
            nsenter = ["nsenter", "-t", str(process.pid), "-m", "rm", f"{mnt}/filler"]
            assert (await trio.run_process(nsenter, check=False)).returncode == 0
            again = {"op": "publish", "topic": "t", "data": "room", "id": "again"}
            while not (await ask(sock, again))[0]["ok"]:  # noqa: ASYNC110 - a real process
                await trio.sleep(0.1)  # that tries its writes again every second
    finally:
        await reap(process)
    assert sys.platform.startswith("linux")
