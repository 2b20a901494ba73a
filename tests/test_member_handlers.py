"""Event handlers (``--on-event KIND=PATH``) on a real node: a script gets the event in
its environment and as JSON on its standard input; handlers run one at a time; one
that runs too long is killed; a full queue drops and counts; a handler that cannot run
is refused when the node is built (and by ``p2pnode run``, before it starts)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from pathlib import Path

import pytest
import trio

from p2pnode.client import open_client
from p2pnode.errors import ConfigError
from p2pnode.members import MemberInfo
from p2pnode.node import Node
from p2pnode.node.handlers import EVENT_QUEUE

from .conftest import loopback_config, running_nodes
from .test_cli import P2PNODE


def script(path: Path, body: str) -> str:
    """An executable shell script at ``path``."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def recorder(tmp: Path, name: str = "record") -> tuple[str, Path]:
    """A handler that appends its P2PNODE_* variables and its standard input to a file."""
    out = tmp / f"{name}.out"
    body = (f"{{ env | grep '^P2PNODE_' | sort; echo '--- stdin'; cat; echo '--- end'; }} "
            f">> '{out}'\n")
    return script(tmp / f"{name}.sh", body), out


def runs(out: Path) -> list[tuple[dict[str, str], dict[str, object]]]:
    """Each run a recorder made: its variables and the JSON it read."""
    found = []
    for chunk in out.read_text().split("--- end\n")[:-1]:
        head, stdin = chunk.split("--- stdin\n")
        env = dict(line.split("=", 1) for line in head.splitlines())
        found.append((env, json.loads(stdin)))
    return found


async def test_a_handler_gets_the_event_in_its_environment_and_on_stdin(
        short_tmp: Path) -> None:
    path, out = recorder(short_tmp)
    config = loopback_config(short_tmp, "a", tags=(("role", "display"),),
                             event_handlers=(("member_update", path),))
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,), \
                open_client(node.config.socket_path) as client:
            await client.set_tags({"room": "kitchen, 1st floor"})
            await node.handlers.wait_idle()
            ((env, event),) = runs(out)
            assert env["P2PNODE_EVENT"] == "member_update"
            assert env["P2PNODE_MEMBER_ID"] == node.node_hex
            assert env["P2PNODE_MEMBER_NAME"] == "a"
            assert env["P2PNODE_MEMBER_STATE"] == "alive"
            assert env["P2PNODE_MEMBER_ADDRS"] == node.listen_str
            tags = {"role": "display", "room": "kitchen, 1st floor"}
            assert json.loads(env["P2PNODE_MEMBER_TAGS"]) == tags
            assert event["event"] == "member_update"
            member = event["member"]
            assert isinstance(member, dict)
            assert member["node_id"] == node.node_hex
            assert member["tags"] == tags
            assert (node.handlers.ran, node.handlers.failed) == (1, 0)


async def test_handlers_by_kind_and_for_all_run_one_at_a_time_in_order(
        short_tmp: Path) -> None:
    update, update_out = recorder(short_tmp, "update")
    every, every_out = recorder(short_tmp, "every")
    dead, dead_out = recorder(short_tmp, "dead")
    config = loopback_config(short_tmp, "a", event_handlers=(
        ("member_update", update), ("member_*", every), ("member_dead", dead)))
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            for i in range(3):
                node.membership.set_tags({"n": str(i)})
            await node.handlers.wait_idle()
    assert [e["member"]["tags"] for _, e in runs(update_out)] == [  # type: ignore[index]
        {"n": "0"}, {"n": "1"}, {"n": "2"}]
    assert len(runs(every_out)) == 3
    assert not dead_out.exists()
    assert node.handlers.ran == 6


async def test_a_handler_that_runs_too_long_is_killed(short_tmp: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pid_file = short_tmp / "pid"
    slow = script(short_tmp / "slow.sh", f"echo $$ > '{pid_file}.tmp'\n"
                                         f"mv '{pid_file}.tmp' '{pid_file}'\nexec sleep 60\n")
    after, out = recorder(short_tmp)
    config = loopback_config(short_tmp, "a", event_timeout=1.0, event_handlers=(
        ("member_update", slow), ("member_update", after)))
    caplog.set_level(logging.WARNING, "p2pnode.handlers")
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            start = trio.current_time()
            node.membership.set_tags({"n": "1"})
            await node.handlers.wait_idle()
            took = trio.current_time() - start
    assert node.handlers.timed_out == 1
    assert 1.0 <= took < 10  # killed after its timeout, not after its 60 s
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    assert len(runs(out)) == 1  # the next handler ran after it
    assert any("still running after 1s" in r.getMessage() for r in caplog.records)


async def test_a_full_queue_drops_and_counts(short_tmp: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    quick = script(short_tmp / "quick.sh", "exit 0\n")
    config = loopback_config(short_tmp, "a", event_handlers=(("member_update", quick),))
    caplog.set_level(logging.WARNING, "p2pnode.handlers")
    with trio.fail_after(60):
        async with running_nodes([config]) as (node,):
            # No checkpoint between the events: the runner takes none of them meanwhile.
            for i in range(EVENT_QUEUE + 6):
                node.membership.set_tags({"n": str(i)})
            assert node.handlers.dropped == 6
            await node.handlers.wait_idle()
            assert node.handlers.ran == EVENT_QUEUE
            async with open_client(node.config.socket_path) as client:
                status = (await client.status())["handlers"]
            assert status == {"configured": 1, "queued": 0, "ran": EVENT_QUEUE, "failed": 0,
                              "timed_out": 0, "dropped": 6}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # the first drop is logged, not each one
    assert f"event handler queue full ({EVENT_QUEUE})" in warnings[0]


async def test_a_failing_handler_is_logged_with_its_error(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    failing = script(short_tmp / "fail.sh", "echo 'cannot reach the display' >&2\nexit 3\n")
    gone = script(short_tmp / "gone.sh", "exit 0\n")  # removed once the node runs
    config = loopback_config(short_tmp, "a", event_handlers=(("member_*", failing),
                                                             ("member_update", gone)))
    caplog.set_level(logging.WARNING, "p2pnode.handlers")
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,), \
                open_client(node.config.socket_path) as monitor:
            os.unlink(gone)
            await monitor.monitor("warning")
            node.membership.set_tags({"n": "1"})
            await node.handlers.wait_idle()
            event = await monitor.next_event()  # its fields do not hide the event's kind
            assert event["event"] == "log"
            assert (event["member_event"], event["handler"]) == ("member_update", failing)
            node.membership.set_tags({"n": "2"})  # the node goes on
            await node.handlers.wait_idle()
    assert (node.handlers.ran, node.handlers.failed) == (2, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert "failed (exit status 3): cannot reach the display" in messages[0]
    assert f"{gone} for member_update: cannot run it: No such file" in messages[1]
    assert len(messages) == 4


def test_a_handler_that_cannot_run_is_refused_at_start(short_tmp: Path) -> None:
    plain = short_tmp / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    ok = script(short_tmp / "ok.sh", "exit 0\n")
    cases = [(("member_dead", str(short_tmp / "missing")), "no such file"),
             (("member_dead", str(plain)), "not executable"),
             (("member_dead", str(short_tmp)), "not a file"),
             (("member_died", ok), "unknown event 'member_died'; the events are member_join")]
    for handler, message in cases:
        config = loopback_config(short_tmp, "a", event_handlers=(handler,))
        with pytest.raises(ConfigError, match=message):
            Node(config)
        assert not (short_tmp / "a").exists()  # refused before taking the data directory


@pytest.mark.parametrize(("args", "message"), [
    (["--on-event", "member_dead"], "--on-event: 'member_dead': expected KIND=PATH"),
    (["--on-event", "member_dead=/nonexistent/x"],
     "--on-event member_dead=/nonexistent/x: no such file"),
    (["--on-event", "member_gone=/bin/true"], "unknown event 'member_gone'"),
    (["--event-timeout", "0"], "--event-timeout 0: must be greater than 0"),
    (["--tag", "role"], "--tag: tag 'role': expected KEY=VALUE"),
    (["--tag", "a b=1"], "--tag: tag key 'a b': 1-64 characters"),
    (["--tag", "a=1", "--tag", "a=2"], "--tag: tag a is given twice"),
])
async def test_run_refuses_bad_flags_clearly(short_tmp: Path, args: list[str],
                                             message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    with trio.fail_after(30):
        done = await trio.run_process(
            [*P2PNODE, "run", "--no-mdns", "--listen", "127.0.0.1:0", "--data-dir",
             str(short_tmp / "d"), "--socket", str(short_tmp / "s.sock"), *args],
            env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert message in done.stderr.decode(), done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


async def test_a_reload_applies_tags_and_handlers(short_tmp: Path) -> None:
    path, out = recorder(short_tmp)
    config = loopback_config(short_tmp, "a", tags=(("role", "display"), ("room", "1")))
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            node.membership.set_tags({"api": "x"})  # set at run time: kept by a reload
            incarnation = node.membership.me.incarnation
            new = dataclasses.replace(node.config, tags=(("role", "display"), ("floor", "2")),
                                      event_handlers=(("member_update", path),))
            done = node.reconfigure(new)
            assert set(done.applied) == {"tags", "event_handlers"}
            assert node.membership.me.tags == {"role": "display", "api": "x", "floor": "2"}
            assert node.membership.me.incarnation == incarnation + 1
            await node.handlers.wait_idle()  # the handler came with the reload: not run yet
            assert not out.exists()
            node.membership.set_tags({"n": "1"})
            await node.handlers.wait_idle()
            assert len(runs(out)) == 1
            # The same again: no change, no new record.
            node.reconfigure(new)
            assert node.membership.me.incarnation == incarnation + 2
            # A handler that cannot run: refused, nothing changed.
            bad = dataclasses.replace(new, tags=(("x", "y"),),
                                      event_handlers=(("member_dead", str(short_tmp / "no")),))
            with pytest.raises(ConfigError, match="no such file"):
                node.reconfigure(bad)
            assert node.config.tags == new.tags
            assert "x" not in node.membership.me.tags


async def test_another_members_odd_name_reaches_the_handler(short_tmp: Path) -> None:
    out = short_tmp / "name"
    path = script(short_tmp / "name.sh", f"printf '%s' \"$P2PNODE_MEMBER_NAME\" > '{out}'\n"
                                         f"cat > '{out}.json'\n")
    config = loopback_config(short_tmp, "a", event_handlers=(("member_join", path),))
    other = MemberInfo(bytes(range(16)), "two\nlines\0and a NUL", ["10.0.0.2:7420"], 1, "n",
                       {"role": "x"})
    with trio.fail_after(20):
        async with running_nodes([config]) as (node,):
            node.membership.emit("member_join", other)  # as the member table would
            await node.handlers.wait_idle()
    assert node.handlers.failed == 0
    assert out.read_text() == "two\nlinesand a NUL"  # no NUL in an environment
    event = json.loads((short_tmp / "name.json").read_text())
    assert event["member"]["name"] == "two\nlines\0and a NUL"  # JSON carries it as it is
