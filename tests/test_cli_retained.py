"""``p2pnode send --retain``, ``recv`` (retained messages first, or not with
``--no-retained``) and the retained line of ``status``, in subprocesses against real
nodes on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from p2pnode.testing import wait_until

from .conftest import loopback_config, running_nodes
from .test_cli import P2PNODE, Proc, reap
from .test_examples import ENV


async def cli(*args: str) -> str:
    res = await trio.run_process([*P2PNODE, *args], capture_stdout=True, capture_stderr=True,
                                 env=ENV, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return bytes(res.stdout).decode()


async def test_send_retain_and_recv_shows_the_retained_messages_first(short_tmp: Path) -> None:
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            assert a.listen_addr is not None
            peer = ("127.0.0.1", a.listen_addr[1])
            async with running_nodes([loopback_config(short_tmp, "b", peers=(peer,))]) as (b,):
                await b.wait_peer_count(1, 1)
                sock_a, sock_b = str(a.config.socket_path), str(b.config.socket_path)
                await cli("send", "--socket", sock_a, "--retain", "--topic", "temp", "21.5")
                await cli("send", "--socket", sock_a, "--retain", "--topic", "mode", "eco")
                await cli("send", "--socket", sock_a, "--retain", "--topic", "mode", "")
                await wait_until(lambda: b.retaining.store.tombstones == 1
                                 and b.retaining.store.values == 1)
                recv = await trio.lowlevel.open_process(
                    [*P2PNODE, "recv", "--socket", sock_b, "--topic", "temp", "--topic",
                     "mode", "--count", "2", "--data"], env=ENV, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
                try:
                    await Proc(recv).wait_line("subscribed to temp, mode; 1 retained "
                                               "message first")
                    await cli("send", "--socket", sock_a, "--topic", "temp", "live")
                    out = Proc(recv, recv.stdout)
                    await out.wait_line("^live$")
                    assert out.seen == ["21.5", "live"]  # the cleared topic: nothing
                    assert await recv.wait() == 0
                finally:
                    await reap(recv)
                text = await cli("recv", "--socket", sock_b, "--topic", "temp", "--count",
                                 "1", "--json")
                assert '"retained": true' in text
                assert '"data": "21.5"' in text
                recv = await trio.lowlevel.open_process(
                    [*P2PNODE, "recv", "--socket", sock_b, "--topic", "temp", "--count", "1",
                     "--no-retained", "--data"], env=ENV, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
                try:
                    await Proc(recv).wait_line("subscribed to temp$")
                    await cli("send", "--socket", sock_a, "--topic", "temp", "live again")
                    assert await recv.wait() == 0
                    assert recv.stdout is not None
                    assert await recv.stdout.receive_some() == b"live again\n"
                finally:
                    await reap(recv)
                status = await cli("status", "--socket", sock_b, "--interval", "0")
                assert "retained  1 topics (at most 10000)" in status
                assert "1 cleared" in status
