"""What the client commands print: recv's line formats, send's label, plurals, the mesh
table's state column (a linked peer is live), against real nodes where it matters."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio

from p2pnode.cli.commands import mesh_table, monitor_line
from p2pnode.cli.recv import message_line, notice
from p2pnode.cli.text import one_line, plural, table
from p2pnode.testing import wait_until

from .test_cli import P2PNODE, Proc, reap
from .test_client_pipeline import two_nodes

EVENT = {"event": "message", "msg_id": "1440204d935af4930000000000000003",
         "origin": "96f10c649eca5b14f09dce126bf02e49", "topic": "chat", "hops": 1,
         "data": "two\tfields\nand a line \\ café"}


def test_plural_table_and_one_line() -> None:
    assert [plural(n, "message") for n in (0, 1, 2)] == ["0 messages", "1 message",
                                                         "2 messages"]
    assert plural(1, "copy", "copies") == "1 copy"
    assert plural(3, "copy", "copies") == "3 copies"
    assert table([("A", "BB"), ("long", "x")]) == ["A     BB", "long  x"]
    assert one_line("a\tb\nc\r\\d\x00é") == "a\\tb\\nc\\r\\\\d\\x00é"
    assert one_line("\ud800x") == "\\ud800x"  # printable: no UnicodeEncodeError
    assert one_line(b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")) == "café \\xff"


def test_recv_lines_in_each_mode() -> None:
    line = message_line(EVENT, "text", "a")
    assert line == "chat\ta\ttwo\\tfields\\nand a line \\\\ café"
    assert line.split("\t") == ["chat", "a", "two\\tfields\\nand a line \\\\ café"]
    assert message_line(EVENT, "data", "a") == EVENT["data"]  # as it is
    assert json.loads(message_line(EVENT, "json", "a")) == EVENT
    binary = {**EVENT, "data_b64": "/wA="}
    del binary["data"]
    assert message_line(binary, "text", "96f10c64") == "chat\t96f10c64\t\\xff\\x00"
    literal = {**EVENT, "data": "\\xff"}  # the text \xff, not the byte: told apart
    assert message_line(literal, "text", "a") == "chat\ta\t\\\\xff"
    assert message_line(binary, "data", "") == "\\xff\x00"


def test_notices_have_correct_plurals() -> None:
    assert notice({"event": "dropped", "count": 1}, "/s") == \
        "p2pnode: 1 message was dropped: this receiver did not keep up"
    assert notice({"event": "dropped", "count": 7}, "/s") == \
        "p2pnode: 7 messages were dropped: this receiver did not keep up"
    assert notice({"event": "reconnected", "down_s": 0.4, "replayed": 1}, "/s") == \
        "p2pnode: reconnected to /s after 0.4 s; replaying 1 message from its history"
    delivered = {"event": "delivered", "topic": "t", "msg_id": "m", "origin": "o" * 32,
                 "hops": 1, "size": 1}
    assert monitor_line(delivered, "info") == "delivered t m from oooooooo, 1 hop, 1 byte"
    assert monitor_line({**delivered, "hops": 2, "size": 100}, "info") == \
        "delivered t m from oooooooo, 2 hops, 100 bytes"
    assert monitor_line({"event": "dropped", "count": 1}, "info") == \
        "(1 event dropped: this monitor did not keep up)"


def test_mesh_table_says_linked_for_a_live_peer() -> None:
    a, b, c = "1b" * 16, "15" * 16, "4e" * 16
    view = {"self": b, "links": [[a, b]], "nodes": [
        {"node_id": a, "name": "a", "listen": "10.0.0.1:7420", "links": [b],
         "last_seen_s": 23.0, "linked": True},
        {"node_id": b, "name": "b", "listen": "10.0.0.2:7420", "links": [a],
         "last_seen_s": 0.0, "linked": False},
        {"node_id": c, "name": "c", "listen": "10.0.0.3:7420", "links": [],
         "last_seen_s": 12.4, "linked": False}]}
    lines = mesh_table(view).splitlines()
    assert lines[0].split() == ["NODE", "ID", "NAME", "LISTEN", "LINKS", "STATE"]
    assert lines[1].endswith("  linked")
    assert "ago" not in lines[1]
    assert lines[2].endswith("  this node")
    assert lines[3].endswith("  heard 12s ago")
    assert "3 nodes, 1 link:" in lines


async def test_a_linked_peer_is_live_in_mesh_and_send_says_what_it_sent(
        short_tmp: Path) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            await wait_until(lambda: len(b.mesh_info()["nodes"]) == 2)
            info = b.mesh_info()
            by_name = {n["name"]: n for n in info["nodes"]}
            assert by_name["a"]["linked"] is True
            assert by_name["b"]["linked"] is False  # itself
            sock_a, sock_b = str(a.config.socket_path), str(b.config.socket_path)
            res = await trio.run_process([*P2PNODE, "mesh", "--socket", sock_b],
                                         capture_stdout=True, capture_stderr=True)
            row = next(line for line in res.stdout.decode().splitlines()
                       if line.split()[1:2] == ["a"])
            assert row.endswith("  linked"), row
            recv = await trio.lowlevel.open_process(
                [*P2PNODE, "recv", "--socket", sock_b, "--topic", "chat", "--topic", "x",
                 "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await Proc(recv).wait_line("^p2pnode: subscribed to chat, x$")
                sent = await trio.run_process(
                    [*P2PNODE, "send", "--socket", sock_a, "--topic", "chat", "hello", "b"],
                    capture_stdout=True, capture_stderr=True)
                assert sent.stderr == b""
                (msg_id,) = sent.stdout.decode().split()[2:3]
                assert sent.stdout.decode() == f"sent message {msg_id} to topic chat\n"
                await trio.run_process([*P2PNODE, "send", "--socket", sock_b, "--topic",
                                        "x"], stdin=b"two\tcolumns\n", capture_stdout=True)
                out = Proc(recv, recv.stdout)
                assert (await out.wait_line("^chat\t")).string == "chat\ta\thello b"
                assert (await out.wait_line("^x\t")).string == "x\tb\ttwo\\tcolumns"
                assert await recv.wait() == 0
            finally:
                await reap(recv)


async def test_recv_into_a_closed_pipe_ends_quietly(short_tmp: Path) -> None:
    # `p2pnode recv | head -1`: once head has gone, recv ends with 141 (128 + SIGPIPE,
    # what the shell reports for tools that SIGPIPE ends), without an error message.
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b):
            recv = await trio.lowlevel.open_process(
                [*P2PNODE, "recv", "--socket", str(b.config.socket_path), "--data"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                err = Proc(recv)
                await err.wait_line("subscribed to default")
                await trio.run_process([*P2PNODE, "send", "--socket",
                                        str(a.config.socket_path), "one"], capture_stdout=True)
                assert (await Proc(recv, recv.stdout).wait_line("^one$")).string == "one"
                assert recv.stdout is not None
                await recv.stdout.aclose()  # the reader goes
                await trio.run_process([*P2PNODE, "send", "--socket",
                                        str(a.config.socket_path), "two"], capture_stdout=True)
                assert await recv.wait() == 141
                assert recv.stderr is not None
                rest = b""
                while chunk := await recv.stderr.receive_some(65536):
                    rest += chunk
                assert rest == b""
                assert err.seen == ["p2pnode: subscribed to default"]
            finally:
                await reap(recv)
