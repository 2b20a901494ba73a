"""``p2pnode members`` and ``p2pnode tags`` against a real node, and ``p2pnode run --tag
--on-event`` end to end: the handler of a real ``run`` process gets the event that a
``tags`` command caused."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import trio

from p2pnode.cli.membersview import members_table
from p2pnode.node import Node

from .conftest import loopback_config, running_nodes
from .test_cli import P2PNODE, spawn
from .test_member_handlers import script

ENV = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}


async def cli(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process([*P2PNODE, *args], env=ENV, capture_stdout=True,
                                  capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
async def node(short_tmp: Path) -> object:
    config = loopback_config(short_tmp, "hall", tags=(("role", "display"),))
    async with running_nodes([config]) as (n,):
        yield n


async def test_members_and_tags_commands(node: Node) -> None:
    sock = str(node.config.socket_path)
    with trio.fail_after(60):
        code, out, _ = await cli("members", "--socket", sock)
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["NODE", "ID", "NAME", "STATE", "SINCE", "ADDRESS", "TAGS"]
        assert lines[1].split()[:5] == [node.node_hex, "hall", "(this", "node)", "alive"]
        assert lines[1].endswith(f"{node.listen_str}  role=display")
        assert lines[-1] == "1 member: 1 alive"
        code, out, _ = await cli("members", "--socket", sock, "--json", "--tag", "role=display",
                                 "--state", "alive", "--state", "suspect")
        assert code == 0
        assert [m["name"] for m in json.loads(out)] == ["hall"]
        code, out, _ = await cli("members", "--socket", sock, "--tag", "role=speaker")
        assert (code, out) == (0, "no members match\n")
        code, out, _ = await cli("tags", "--socket", sock, "--set", "room=kitchen",
                                 "--delete", "role")
        assert (code, out) == (0, "room=kitchen\n")
        assert node.membership.me.tags == {"room": "kitchen"}
        code, out, _ = await cli("tags", "--socket", sock, "--json")
        assert (code, json.loads(out)) == (0, {"room": "kitchen"})
        code, out, _ = await cli("tags", "--socket", sock, "--delete", "room")
        assert (code, out) == (0, "no tags\n")


@pytest.mark.parametrize(("args", "status", "message"), [
    (["members", "--tag", "role"], 1, "--tag 'role': tag 'role': expected KEY=VALUE"),
    (["members", "--state", "asleep"], 2, "argument --state: invalid choice: 'asleep'"),
    (["tags", "--set", "bad key=1"], 1, "--set 'bad key=1': tag key 'bad key'"),
    (["tags", "--set", "a=1", "--delete", "a"], 1, "--delete a: it is also given to --set"),
    (["tags", "--set", "k=" + "v" * 300], 1, "the value is 300 characters, over 256"),
    (["tags", "--delete", "no such!"], 1, "delete: tag key 'no such!'"),
])
async def test_bad_member_commands_fail_clearly(node: Node, args: list[str], status: int,
                                                message: str) -> None:
    with trio.fail_after(30):
        code, _, err = await cli(*args, "--socket", str(node.config.socket_path))
    assert code == status
    assert message in err
    assert "Traceback" not in err
    assert node.membership.me.tags == {"role": "display"}


def test_the_members_table_shows_what_it_is_given() -> None:
    text = members_table([
        {"node_id": "ab" * 16, "name": "b\tx", "state": "dead", "since_s": 3725,
         "addrs": ["10.0.0.2:7420"], "tags": {"z": "1", "a": "new\nline"}},
        {"node_id": "cd" * 16, "name": "c", "state": "alive", "self": True}])
    lines = text.splitlines()
    assert "b\\tx" in lines[1]
    assert "1h 2m 5s" in lines[1]
    assert lines[1].endswith("a=new\\nline,z=1")
    assert lines[2].split()[-3:] == ["?", "-", "-"]
    assert lines[-1] == "2 members: 1 dead, 1 alive"


async def test_run_with_tags_and_a_handler_end_to_end(short_tmp: Path) -> None:
    fifo = short_tmp / "events"
    os.mkfifo(fifo)
    handler = script(short_tmp / "h.sh", f"cat > '{fifo}'\n")
    sock = str(short_tmp / "n.sock")
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", "n", "--socket", sock,
            "--data-dir", str(short_tmp / "n"), "--tag", "role=display", "--tag", "room=1",
            "--on-event", f"member_update={handler}", "--event-timeout", "20"]
    with trio.fail_after(60):
        async with spawn(args) as proc:
            await proc.wait_line("listening on")
            code, out, _ = await cli("members", "--socket", sock, "--json")
            assert code == 0
            assert json.loads(out)[0]["tags"] == {"role": "display", "room": "1"}
            assert (await cli("tags", "--socket", sock, "--set", "room=2"))[0] == 0
            event = json.loads(await trio.to_thread.run_sync(fifo.read_text))
            assert event["event"] == "member_update"
            assert event["member"]["tags"] == {"role": "display", "room": "2"}


async def test_sighup_reloads_the_tags(short_tmp: Path) -> None:
    conf = short_tmp / "p2pnode.toml"
    conf.write_text('tags = ["role=display"]\n')
    sock = str(short_tmp / "n.sock")
    args = ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--name", "n", "--socket", sock,
            "--data-dir", str(short_tmp / "n"), "--config", str(conf)]
    with trio.fail_after(60):
        async with spawn(args) as proc:
            await proc.wait_line("listening on")
            conf.write_text('tags = ["role=speaker", "room=2"]\n')
            proc.process.send_signal(signal.SIGHUP)
            line = (await proc.wait_line("reloaded the settings: .*")).group(0)
            assert "tags [role=display] -> [role=speaker, room=2]" in line
            code, out, _ = await cli("tags", "--socket", sock, "--json")
            assert (code, json.loads(out)) == (0, {"role": "speaker", "room": "2"})
