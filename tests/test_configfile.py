"""Settings of `p2pnode run`: file, environment and flags, their precedence and errors;
two real nodes started from configuration files only."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pnode.cli.parser import build_parser
from p2pnode.config import DEFAULT_PORT
from p2pnode.config.file import KEYS, SettingsError, build_settings, gather, load_file
from p2pnode.errors import ConfigError

from .test_cli import P2PNODE, spawn


def settings(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    args = build_parser().parse_args(["run", *argv])
    return build_settings(gather(args, env or {}))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = settings([])
    assert (s.node.listen_host, s.node.listen_port) == ("0.0.0.0", DEFAULT_PORT)
    assert s.node.mdns
    assert not s.node.insecure
    assert s.node.peers == ()
    assert (s.log_level, s.log_format, s.metrics) == ("info", "text", None)


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "p.toml", 'listen = "127.0.0.1:7001"\nname = "file"\nmax_hops = 3\n'
                'peers = ["10.0.0.1", "10.0.0.2:7500"]\nmdns = false\nlog_format = "json"\n')
    env = {"P2PNODE_NAME": "env", "P2PNODE_MAX_HOPS": "5", "P2PNODE_PEERS": "10.0.0.9"}
    s = settings(["--config", str(cfg), "--max-hops", "7"], env)
    assert s.node.name == "env"                           # env over file
    assert s.node.max_hops == 7                           # flag over env
    assert s.node.listen_port == 7001                     # file over default
    assert s.node.peers == (("10.0.0.9", DEFAULT_PORT),)  # a list is replaced, not merged
    assert not s.node.mdns
    assert s.log_format == "json"
    assert s.sources["name"] == "P2PNODE_NAME"
    assert s.sources["max_hops"] == "--max-hops"
    assert s.sources["listen"] == f"{cfg}: listen"
    s = settings(["--config", str(cfg), "--peer", "h:1", "--peer", "g", "--no-mdns"])
    assert s.node.peers == (("h", 1), ("g", DEFAULT_PORT))
    s = settings(["--config", str(cfg), "--name", "flag"], {"P2PNODE_MDNS": "on"})
    assert s.node.name == "flag"
    assert s.node.mdns


def test_env_values_and_config_variable(tmp_path: Path) -> None:
    cfg = write(tmp_path / "p.toml", 'data_dir = "state"\nnetwork_key = "/k/net.key"\n')
    s = settings([], {"P2PNODE_CONFIG": str(cfg), "P2PNODE_MDNS": "no",
                      "P2PNODE_MDNS_INTERFACES": "10.0.0.1, 10.0.0.2",
                      "P2PNODE_METRICS": "127.0.0.1:9100", "P2PNODE_SOCKET": "/tmp/x.sock"})
    assert s.node.data_dir == tmp_path / "state"          # relative to the file
    assert s.node.network_key == Path("/k/net.key")
    assert not s.node.mdns
    assert s.node.mdns_interfaces == ("10.0.0.1", "10.0.0.2")
    assert s.metrics == ("127.0.0.1", 9100)
    assert s.node.socket_path == Path("/tmp/x.sock")


def test_every_run_flag_has_a_key() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {o for a in run._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help", "--config"} == {k.flag for k in KEYS}


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ('listen = 7001\n', "listen must be a string, not an integer"),
    ('mdns = "no"\n', "mdns must be true or false, not a string"),
    ('max_hops = true\n', "max_hops must be an integer, not a boolean"),
    ('peers = "a:1"\n', "peers must be a list of strings"),
    ('log_level = "loud"\n', 'log_level must be one of "debug"'),
    ('[run]\nlisten = "x"\n', "unknown key 'run'"),
    ('listen = \n', "not valid TOML"),
    ('listen = "h:99999"\n', "listen: bad address 'h:99999': port must be 0-65535"),
    ('max_hops = 300\n', "max_hops = 300: must be at most 255"),
    ('name = ""\n', "name = '': must be 1-64 bytes"),
])
def test_file_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(SettingsError, match=str(cfg)) as info:
        settings(["--config", str(cfg)])
    assert message in str(info.value)


def test_env_and_flag_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="P2PNODE_MDNS must be 1/0"):
        settings([], {"P2PNODE_MDNS": "maybe"})
    with pytest.raises(SettingsError, match="P2PNODE_LISTEN: bad address"):
        settings([], {"P2PNODE_LISTEN": "h:x"})
    with pytest.raises(SettingsError, match="cannot read configuration file"):
        load_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="--listen: bad address") as info:
        settings(["--listen", "h:99999"])
    assert not isinstance(info.value, SettingsError)      # a bad flag: exit status 1


async def test_two_nodes_from_config_files_only(short_tmp: Path) -> None:
    def config(name: str, peer_port: str | None) -> Path:
        text = (f'listen = "127.0.0.1:0"\nmdns = false\nname = "{name}"\n'
                f'socket = "{name}.sock"\ndata_dir = "{name}"\n')
        if peer_port:
            text += f'peers = ["127.0.0.1:{peer_port}"]\n'
        return write(short_tmp / f"{name}.toml", text)

    with trio.fail_after(30):
        async with spawn(["run", "--config", str(config("a", None))]) as a:
            port = (await a.wait_line(r"listening on 127\.0\.0\.1:(\d+)")).group(1)
            async with spawn(["run", "--config", str(config("b", port))]) as b:
                await b.wait_line("listening on")
                res = await trio.run_process(
                    [*P2PNODE, "peers", "--socket", str(short_tmp / "b.sock"), "--wait-min",
                     "1"], capture_stdout=True, capture_stderr=True, check=False)
                assert res.returncode == 0, res.stderr
                assert b" a " in res.stdout


async def test_bad_config_file_exits_2_and_starts_nothing(short_tmp: Path) -> None:
    cfg = write(short_tmp / "bad.toml", f'socket = "{short_tmp}/x.sock"\nlisten_port = 1\n')
    with trio.fail_after(20):
        res = await trio.run_process([*P2PNODE, "run", "--config", str(cfg)],
                                     capture_stderr=True, check=False)
    assert res.returncode == 2
    assert f"{cfg}: unknown key 'listen_port'".encode() in res.stderr
    assert not (short_tmp / "x.sock").exists()


def test_tags_and_event_handlers_from_the_file_the_environment_and_flags(
        tmp_path: Path) -> None:
    cfg = write(tmp_path / "p.toml", 'tags = ["role=display", "room=kitchen 1"]\n'
                'on_events = ["member_dead=/usr/local/bin/on-dead"]\nevent_timeout = 5\n')
    s = settings(["--config", str(cfg)])
    assert s.node.tags == (("role", "display"), ("room", "kitchen 1"))
    assert s.node.event_handlers == (("member_dead", "/usr/local/bin/on-dead"),)
    assert s.node.event_timeout == 5
    s = settings(["--config", str(cfg)], {"P2PNODE_TAGS": "a=1,b=", "P2PNODE_EVENT_TIMEOUT": "2"})
    assert s.node.tags == (("a", "1"), ("b", ""))
    assert s.node.event_timeout == 2
    assert s.sources["tags"] == "P2PNODE_TAGS"
    s = settings(["--config", str(cfg), "--tag", "x=y", "--on-event", "member_*=/bin/h"])
    assert s.node.tags == (("x", "y"),)
    assert s.node.event_handlers == (("member_*", "/bin/h"),)
    assert settings([]).node.event_timeout == 10.0


@pytest.mark.parametrize(("text", "env", "message"), [
    ('tags = ["role"]\n', {}, "FILE: tags: tag 'role': expected KEY=VALUE"),
    ('tags = "role=x"\n', {}, "tags must be a list of strings"),
    ('tags = ["a=1", "a=2"]\n', {}, "FILE: tags: tag a is given twice"),
    ("", {"P2PNODE_TAGS": "bad!key=1"}, "P2PNODE_TAGS: tag key 'bad!key'"),
    ('on_events = ["/bin/true"]\n', {}, "FILE: on_events: '/bin/true': expected KIND=PATH"),
    ("event_timeout = -1\n", {}, "FILE: event_timeout = -1: must be greater than 0"),
    ("", {"P2PNODE_EVENT_TIMEOUT": "7200"}, "P2PNODE_EVENT_TIMEOUT=7200: must be at most 3600"),
])
def test_bad_tags_and_handlers_name_their_source(tmp_path: Path, text: str,
                                                 env: dict[str, str], message: str) -> None:
    cfg = write(tmp_path / "p.toml", text)
    with pytest.raises(SettingsError) as info:
        settings(["--config", str(cfg)], env)
    assert message.replace("FILE", str(cfg)) in str(info.value)


def test_peer_exchange_can_be_turned_off_by_flag_variable_or_file(tmp_path: Path) -> None:
    assert settings([]).node.peer_exchange
    assert not settings(["--no-peer-exchange"]).node.peer_exchange
    assert not settings([], {"P2PNODE_PEER_EXCHANGE": "0"}).node.peer_exchange
    cfg = write(tmp_path / "p.toml", "peer_exchange = false\n")
    assert not settings(["--config", str(cfg)]).node.peer_exchange
