"""Every ``p2pnode`` subcommand, given bad flags, bad values, missing files, unusable
paths or no node at the socket, exits non-zero with a message that names the problem,
and never with a Python traceback.

The commands run as subprocesses (``python -m p2pnode``), all at once (a few at a
time) in one module fixture; each case is then its own test. Only loopback: the one
busy port is a listening socket on 127.0.0.1 that this module opens, and nothing
starts mDNS (a bad ``--mdns-interface`` is refused before anything is opened).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from p2pnode.cli.checks import preflight
from p2pnode.cli.parser import parse_command_line
from p2pnode.cli.recv import parse_since_arg
from p2pnode.client import ApiReplyError, open_client
from p2pnode.config.file import build_settings, gather
from p2pnode.errors import ConfigError
from p2pnode.node import Node
from p2pnode.testing import start_memory_mesh, wait_until

from .conftest import loopback_config, running_nodes
from .test_cli import Proc, reap

P2PNODE = [sys.executable, "-m", "p2pnode"]
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
NOT_HERE = "203.0.113.77"  # TEST-NET-3: an address of no interface of this machine


@dataclass
class Case:
    args: list[str]
    status: int  # the expected exit status
    says: list[str]  # what stderr must contain
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = ""  # what stdout must contain


@dataclass
class Env:
    """The module's files: T, a short temporary directory, and what is in it."""

    tmp: Path
    busy_port: int

    def __getitem__(self, name: str) -> str:
        return str(self.tmp / name)


def cases(e: Env) -> dict[str, Case]:
    """The bad inputs, by test id. ``e["x"]`` is a path in the module's directory."""
    def node(tag: str) -> list[str]:  # cases that start a node need their own data dir
        return ["--socket", e[f"{tag}.sock"], "--data-dir", e[tag], "--no-mdns"]

    run = ["run", "--listen", "127.0.0.1:0", *node("n")]
    nosock = ["--socket", e["none.sock"]]
    too_long = "/tmp/" + "x" * 120 + ".sock"
    busy = f"127.0.0.1:{e.busy_port}"
    return {
        # keygen
        "keygen-missing-dir": Case(["keygen", "--network", e["nodir/x.key"]], 1,
                                   [f"--network {e['nodir/x.key']}: directory {e['nodir']} "
                                    "does not exist"]),
        "keygen-dir": Case(["keygen", "--network", e.tmp.as_posix()], 1, ["is a directory"]),
        "keygen-under-file": Case(["keygen", "--network", e["file/x.key"]], 1,
                                  [f"{e['file']} is not a directory"]),
        "keygen-exists": Case(["keygen", "--network", e["net.key"]], 1, ["exists already"]),
        "keygen-no-flag": Case(["keygen"], 2, ["usage: p2pnode keygen",
                                               "required: --network"]),
        # run: values
        "run-port-in-use": Case(["run", "--listen", busy, *node("p")], 1,
                                [f"cannot listen on {busy} (--listen): the port is in use",
                                 "--listen HOST:PORT"]),
        "run-port-range": Case([*run, "--listen", "127.0.0.1:99999"], 1,
                               ["port must be 0-65535"]),
        "run-listen-not-here": Case(["run", "--listen", f"{NOT_HERE}:0", *node("l")], 1,
                                    [f"{NOT_HERE} is not an address of this machine",
                                     "127.0.0.1"]),
        "run-peer-bare-port": Case([*run, "--peer", "7001"], 1,
                                   ["--peer: bad address '7001': a bare number is not a host",
                                    "127.0.0.1:7001"]),
        "run-peer-not-a-host": Case([*run, "--peer", "\udcff:7001"], 1,
                                    ["--peer: bad address", "is neither an IP address nor a "
                                     "host name"]),
        "run-advertise-not-a-host": Case([*run, "--advertise", "a b"], 1,
                                         ["--advertise 'a b': 'a b' is neither an IP address"]),
        "run-config-not-utf8": Case(["run", "--config", e["latin1.toml"]], 2,
                                    ["not valid TOML: not UTF-8 text"]),
        "run-metrics-bare-port": Case([*run, "--metrics", "9464"], 1,
                                      ["a bare number is not a host"]),
        "run-metrics-in-use": Case(["run", "--listen", "127.0.0.1:0", *node("m"),
                                    "--metrics", busy], 1,
                                   [f"cannot listen on {busy} (--metrics)", "in use"]),
        "run-history-age": Case([*run, "--history-age", "9999"], 1,
                                ["--history-age 9999: must be at most 300"]),
        "run-history-bytes": Case([*run, "--history-bytes", "-1"], 1,
                                  ["--history-bytes -1: must be at least 0"]),
        "run-max-hops": Case([*run, "--max-hops", "0"], 1, ["--max-hops 0: must be at least 1"]),
        "run-order-hold": Case([*run, "--order-hold", "inf"], 1,
                               ["--order-hold inf: must be a finite number"]),
        "run-name-empty": Case([*run, "--name="], 1, ["--name '': must be 1-64 bytes"]),
        "run-insecure-key": Case([*run, "--insecure", "--network-key", e["net.key"]], 1,
                                 ["--insecure and --network-key cannot be used together"]),
        "run-garbage-key": Case([*run, "--network-key", e["garbage.key"]], 1,
                                [f"network key {e['garbage.key']} is not a p2pnode key "
                                 "(not PEM)", "p2pnode keygen --network"]),
        "run-missing-key": Case([*run, "--network-key", e["missing.key"]], 1,
                                ["cannot read network key", "No such file or directory"]),
        "run-key-is-dir": Case([*run, "--network-key", e.tmp.as_posix()], 1,
                               ["is a directory"]),
        "run-socket-too-long": Case([*run, "--socket", too_long], 1,
                                    ["over the limit of 107 bytes"]),
        "run-socket-no-dir": Case(["run", "--listen", "127.0.0.1:0", "--no-mdns",
                                   "--data-dir", e["n"], "--socket", e["nodir/x.sock"]], 1,
                                  [f"--socket {e['nodir/x.sock']}: directory {e['nodir']} "
                                   "does not exist"]),
        "run-data-dir-file": Case(["run", "--listen", "127.0.0.1:0", "--no-mdns",
                                   "--socket", e["n.sock"], "--data-dir", e["file"]], 1,
                                  ["exists and is not a directory"]),
        "run-mdns-not-ip": Case([*run[:-1], "--mdns-interface", "eth0"], 1,
                                ["must be an IP address: 'eth0'"]),
        "run-mdns-not-here": Case([*run[:-1], "--mdns-interface", NOT_HERE], 1,
                                  [f"--mdns-interface {NOT_HERE}: no interface of this "
                                   "machine has this address", "127.0.0.1"]),
        "run-config-missing": Case(["run", "--config", e["missing.toml"]], 2,
                                   ["cannot read configuration file"]),
        "run-config-bad": Case(["run", "--config", e["bad.toml"]], 2,
                               [f"{e['bad.toml']}: unknown key 'foo'"]),
        "run-env-bad": Case(run, 2, ["P2PNODE_MAX_HOPS must be an integer"],
                            env={"P2PNODE_MAX_HOPS": "x"}),
        "run-log-level": Case([*run, "--log-level", "loud"], 2, ["invalid choice: 'loud'"]),
        "run-typo": Case([*run, "--lisen", "x"], 2,
                         ["usage: p2pnode run", "unrecognized arguments: --lisen x",
                          "did you mean --listen?"]),
        # check-config
        "check-config-missing": Case(["check-config", e["missing.toml"]], 1,
                                     ["cannot read configuration file"]),
        "check-config-bad": Case(["check-config", e["bad.toml"]], 1, [
            "unknown key 'foo'", "history_age = 9999: must be at most 300",
            f"mdns_interfaces {NOT_HERE}: no interface of this machine has this address",
            "3 errors"]),
        "check-config-no-file": Case(["check-config"], 2, ["usage: p2pnode check-config"]),
        # send
        "send-no-node": Case(["send", *nosock, "hi"], 1, [
            f"no node at the socket {e['none.sock']} (No such file or directory)"]),
        "send-star": Case(["send", *nosock, "--topic", "*", "hi"], 1,
                          ["'*' is the all-topics subscription"]),
        "send-bad-to": Case(["send", *nosock, "--to", "zz", "hi"], 2,
                            ["--to must be a node id: 32 hex digits"]),
        "send-typo": Case(["send", "--bogus"], 2,
                          ["usage: p2pnode send", "unrecognized arguments: --bogus"]),
        "send-socket-no-dir": Case(["send", "--socket", e["nodir/x.sock"], "hi"], 1,
                                   [f"directory {e['nodir']} does not exist"]),
        "send-socket-file": Case(["send", "--socket", e["file"], "hi"], 1,
                                 [f"{e['file']} is a file, not a node's socket"]),
        "send-socket-stale": Case(["send", "--socket", e["stale.sock"], "hi"], 1,
                                  ["Connection refused: the socket file is left from a node"]),
        "send-server-user": Case(["send", *nosock, "--server-user", "no-such-user-p2p", "x"], 1,
                                 ["--server-user: no user named 'no-such-user-p2p'"]),
        "send-topic-not-utf8": Case(["send", *nosock, "--topic", "a\udcff", "hi"], 1,
                                    ["--topic 'a\\xff': a topic is UTF-8 text"]),
        "send-text-not-utf8": Case(["send", *nosock, "\udcff"], 1,
                                   ["TEXT is not UTF-8 text", "standard input"]),
        # recv
        "recv-since-year-1": Case(["recv", *nosock, "--since", "0001-01-01T00:00:00"], 1,
                                  ["no node at the socket"]),
        "recv-topic-not-utf8": Case(["recv", *nosock, "--topic", "\udcff"], 1,
                                    ["a topic is UTF-8 text"]),
        "recv-since-dash": Case(["recv", *nosock, "--since", "-5m"], 1, ["no node at the socket"]),
        "recv-since-bad": Case(["recv", *nosock, "--since", "soon"], 1,
                               ["--since 'soon': expected a message id", "5m"]),
        "recv-since-missing": Case(["recv", *nosock, "--since"], 2,
                                   ["expected one argument", "--since=VALUE"]),
        "recv-count": Case(["recv", *nosock, "--count", "0"], 2, ["--count must be >= 1, not 0"]),
        "recv-durable-since": Case(["recv", *nosock, "--durable", "d", "--since", "5m"], 1,
                                   ["--durable resumes after its last ack by itself"]),
        "recv-typo": Case(["recv", *nosock, "--cuont", "1"], 2,
                          ["usage: p2pnode recv", "did you mean --count?"]),
        # peers
        "peers-wait-min": Case(["peers", *nosock, "--wait-min", "-1"], 2,
                               ["--wait-min must be >= 0, not -1"]),
        "peers-wait-both": Case(["peers", *nosock, "--wait-min", "3", "--wait-max", "1"], 1,
                                ["--wait-min 3 is more than --wait-max 1"]),
        "peers-timeout": Case(["peers", *nosock, "--timeout", "nan"], 2,
                              ["--timeout must be a finite number"]),
        "peers-no-node": Case(["peers", *nosock], 1, ["no node at the socket"]),
        # status
        "status-interval": Case(["status", *nosock, "--interval", "-1"], 2,
                                ["--interval must be >= 0"]),
        "status-socket-too-long": Case(["status", "--socket", too_long], 1,
                                       ["over the limit of 107 bytes"]),
        "status-socket-dir": Case(["status", "--socket", e.tmp.as_posix()], 1,
                                  ["is a directory, not a node's socket"]),
        # monitor
        "monitor-level": Case(["monitor", *nosock, "--level", "loud"], 2, ["invalid choice"]),
        "monitor-count": Case(["monitor", *nosock, "--count", "-2"], 2, ["--count must be >= 1"]),
        "monitor-no-node": Case(["monitor", *nosock], 1, ["no node at the socket"]),
        # mesh
        "mesh-png-format": Case(["mesh", *nosock, "--png", e["m.jpgx"]], 1,
                                ["the file name must end in .png"]),
        "mesh-png-no-dir": Case(["mesh", *nosock, "--png", e["nodir/m.png"]], 1,
                                [f"--png {e['nodir/m.png']}: directory {e['nodir']} does not "
                                 "exist"]),
        "mesh-png-no-matplotlib": Case(["mesh", *nosock, "--png", e["m.png"]], 1,
                                       ["matplotlib is missing", "pip install 'p2pnode[sim]'"],
                                       env={"PYTHONPATH": e["fake"]}),
        "mesh-two-formats": Case(["mesh", *nosock, "--json", "--dot"], 2, ["not allowed with"]),
        "mesh-no-node": Case(["mesh", *nosock], 1, ["no node at the socket"]),
        # the command itself
        "no-command": Case([], 2, ["required: COMMAND"]),
        "bad-command": Case(["sned"], 2, ["invalid choice: 'sned'"]),
    }


def make_files(tmp: Path) -> None:
    (tmp / "file").write_text("not a directory\n")
    (tmp / "garbage.key").write_text("garbage\n")
    (tmp / "garbage.key").chmod(0o600)
    (tmp / "bad.toml").write_text(
        f'foo = 1\nhistory_age = 9999\nmdns_interfaces = ["{NOT_HERE}"]\n')
    (tmp / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    (tmp / "good.toml").write_text('listen = "127.0.0.1:7001"\nmdns = false\n'
                                   'socket = "g.sock"\ndata_dir = "g"\n')
    fake = tmp / "fake"
    fake.mkdir()
    (fake / "matplotlib.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp / "stale.sock"))  # bound, never listening: a node that died
    stale.close()
    subprocess.run([*P2PNODE, "keygen", "--network", str(tmp / "net.key")], check=True,
                   capture_output=True, timeout=30)


async def run_all(all_cases: dict[str, Case], cwd: Path) -> dict[str, tuple[int, str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    limit = trio.CapacityLimiter(4)
    results: dict[str, tuple[int, str, str]] = {}

    async def one(name: str, case: Case) -> None:
        results[name] = (-1, "", "did not exit within 20 s (a node started?)")
        async with limit:
            with trio.move_on_after(20):  # killed then
                proc = await trio.run_process(
                    [*P2PNODE, *case.args], capture_stdout=True, capture_stderr=True,
                    check=False, cwd=cwd, env={**base, **case.env}, stdin=b"")
                results[name] = (proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for name, case in all_cases.items():
                nursery.start_soon(one, name, case)
    return results


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    tmp = Path(tempfile.mkdtemp(prefix="p2pe-"))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        make_files(tmp)
        yield Env(tmp, busy.getsockname()[1])
    finally:
        busy.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def results(env: Env) -> dict[str, tuple[int, str, str]]:
    return trio.run(run_all, cases(env), env.tmp)


CASE_IDS = list(cases(Env(Path("/t"), 1)))


@pytest.mark.parametrize("name", CASE_IDS)
def test_bad_input_fails_clearly(name: str, env: Env,
                                 results: dict[str, tuple[int, str, str]]) -> None:
    case = cases(env)[name]
    status, _out, err = results[name]
    assert "Traceback" not in err, err
    assert status == case.status, err
    for text in case.says:
        assert text in err, err
    assert err.strip(), "no message"


def test_nothing_was_created_on_the_way(env: Env,
                                        results: dict[str, tuple[int, str, str]]) -> None:
    """keygen, run --socket, mesh --png and send --socket were all given a directory that
    does not exist: none of them made it (run used to, with mkdir -p)."""
    assert len(results) == len(CASE_IDS)
    assert not (env.tmp / "nodir").exists()


def test_a_missing_path_is_not_called_a_socket_problem(
        results: dict[str, tuple[int, str, str]]) -> None:
    for name in ("keygen-missing-dir", "mesh-png-no-dir", "mesh-png-format"):
        assert "socket" not in results[name][2]


def test_garbage_key_shows_no_library_text(results: dict[str, tuple[int, str, str]]) -> None:
    err = results["run-garbage-key"][2]
    assert "cryptography.io" not in err
    assert "MalformedFraming" not in err


def test_check_config_prints_ok_and_the_settings(env: Env) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    proc = subprocess.run([*P2PNODE, "check-config", env["good.toml"]], capture_output=True,
                          text=True, timeout=30, check=False, cwd=env.tmp,
                          env={**base, "P2PNODE_LOG_LEVEL": "debug"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{env['good.toml']}: ok"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "127.0.0.1:7001" in rows["listen"]
    assert f"({env['good.toml']}: listen)" in rows["listen"]
    assert "debug" in rows["log_level"]
    assert "(P2PNODE_LOG_LEVEL)" in rows["log_level"]
    assert "(default)" in rows["max_hops"]
    assert not (env.tmp / "g").exists()  # nothing was started or created


def test_since_takes_durations_with_a_dash() -> None:
    args = parse_command_line(["recv", "--since", "-5m"])
    assert args.since == "-5m"
    assert parse_since_arg("-5m", now=1000.0) == parse_since_arg("5m", now=1000.0) == 700.0
    assert parse_command_line(["recv", "--since=-90s"]).since == "-90s"


def test_listen_takes_a_bare_port() -> None:
    args = parse_command_line(["run", "--listen", "7001"])
    node = build_settings(gather(args, {})).node
    assert (node.listen_host, node.listen_port) == ("0.0.0.0", 7001)


def test_preflight_of_run_flags_names_the_interfaces() -> None:
    args = parse_command_line(["run", "--mdns-interface", NOT_HERE, "--mdns-interface",
                               "127.0.0.1"])
    problems = preflight(build_settings(gather(args, {})))
    assert len(problems) == 1
    assert problems[0].startswith(f"--mdns-interface {NOT_HERE}: no interface")
    assert "lo 127.0.0.1" in problems[0]


async def test_send_to_an_unknown_node_fails(short_tmp: Path) -> None:
    """The node refuses a direct message to an id it does not know (``unknown_node``),
    and ``send`` exits 1 saying so; to itself it is taken."""
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]) as (a,):
            sock = str(short_tmp / "a.sock")
            res = await trio.run_process(
                [*P2PNODE, "send", "--socket", sock, "--to", UNKNOWN_ID, "hi"],
                capture_stdout=True, capture_stderr=True, check=False)
            assert res.returncode == 1
            assert (f"unknown_node: no node {UNKNOWN_ID} is known here"
                    in res.stderr.decode())
            assert res.stdout == b""
            res = await trio.run_process(
                [*P2PNODE, "send", "--socket", sock, "--to", a.node_hex, "hi"],
                capture_stdout=True, capture_stderr=True, check=False)
            assert res.returncode == 0, res.stderr
            async with open_client(sock) as client:
                with pytest.raises(ApiReplyError) as info:
                    await client.request({"op": "publish", "topic": "t", "data": "x",
                                          "to": UNKNOWN_ID})
                assert info.value.code == "unknown_node"
                assert a.status_info().api.errors >= 1


async def test_a_node_knows_its_mesh(autojump_clock: trio.testing.MockClock) -> None:
    """Known: itself, its peers, and the nodes of its mesh view (c, two hops away)."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_memory_mesh(nursery, [(1, 0), (2, 1)], 3,
                                              mesh_interval=30.0, mesh_min_interval=1.0)
            await wait_until(lambda: c.node_id in a.mesh.nodes)
            assert all(a.knows_node(n.node_id) for n in (a, b, c))
            assert not a.knows_node(bytes.fromhex(UNKNOWN_ID))
            nursery.cancel_scope.cancel()


async def test_recv_into_a_closed_pipe_ends_quietly(short_tmp: Path) -> None:
    """``p2pnode recv | head -1``: when the reader leaves, recv exits 141 (as a shell
    reports a command ended by SIGPIPE) without a word."""
    sock = str(short_tmp / "a.sock")
    with trio.fail_after(30):
        async with running_nodes([loopback_config(short_tmp, "a")]):
            recv = Proc(await trio.lowlevel.open_process(
                [*P2PNODE, "recv", "--socket", sock, "--topic", "t"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            try:
                await recv.wait_line("subscribed to t")
                out = Proc(recv.process, recv.process.stdout)
                async with open_client(sock) as client:
                    await client.publish("t", "first", wait=True)
                    await out.wait_line("first")
                    assert recv.process.stdout is not None
                    await recv.process.stdout.aclose()  # the reader leaves
                    await client.publish("t", "second", wait=True)
                    assert await recv.process.wait() == 141
                assert recv.process.stderr is not None
                rest = await recv.process.stderr.receive_some(65536)
                assert b"error" not in rest
                assert b"Traceback" not in rest
            finally:
                await reap(recv.process)


async def test_node_refuses_a_socket_in_a_missing_directory(short_tmp: Path) -> None:
    """Embedded in Python too, the node creates no directory for its socket but its
    private default one."""
    cfg = loopback_config(short_tmp, "a", socket_path=short_tmp / "nodir" / "a.sock")
    with trio.fail_after(20), pytest.raises(ConfigError, match="does not exist"):
        await Node(cfg).run()
    assert not (short_tmp / "nodir").exists()


def test_send_with_stdin_closed(short_tmp: Path) -> None:
    proc = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *P2PNODE, "send", "--socket",
                           str(short_tmp / "none.sock")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("p2pnode: error: standard input is closed: give the message as "
                           "TEXT, or the messages on standard input\n")
