"""Identifiers (p2pnode.ids) and configuration (p2pnode.config)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from p2pnode.config.settings import (
    DEFAULT_PORT,
    MAX_TOPIC_BYTES,
    MIN_FRAME,
    NodeConfig,
    format_hostport,
    parse_hostport,
)
from p2pnode.errors import ConfigError, LocalError
from p2pnode.ids import ID_LEN, MsgIdFactory, id_to_hex, parse_id

HEX = "00112233445566778899aabbccddeeff"

# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [HEX, HEX.upper(), f"  {HEX}\n", "AbCd" * 8])
def test_parse_id(text: str) -> None:
    raw = parse_id(text)
    assert len(raw) == ID_LEN
    assert id_to_hex(raw) == text.strip().lower()


@pytest.mark.parametrize(
    "text", ["", HEX[:-1], HEX + "0", "g" * 32, "0x" + HEX[2:], HEX[:16] + " " + HEX[17:], "-" * 32]
)
def test_parse_id_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not an id"):
        parse_id(text)


def test_msg_id_factory_makes_unique_ordered_ids() -> None:
    f = MsgIdFactory()
    ids = [f.next() for _ in range(20_000)]
    assert all(len(i) == ID_LEN for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # one prefix, a big-endian counter
    assert len({i[:8] for i in ids}) == 1


def test_msg_id_factories_do_not_collide() -> None:
    factories = [MsgIdFactory() for _ in range(50)]
    ids = [f.next() for f in factories for _ in range(100)]
    assert len(set(ids)) == len(ids)
    assert len({f.next()[:8] for f in factories}) == len(factories)


# -- parse_hostport / format_hostport ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:80", ("example.com", 80)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
        ("  host:7420\n", ("host", 7420)),
        ("[::1]:7420", ("::1", 7420)),
        ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
        ("host:007", ("host", 7)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected
    assert parse_hostport(text, default_port=1) == expected  # an explicit port wins


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", ("host", DEFAULT_PORT)),
        ("192.168.1.2", ("192.168.1.2", DEFAULT_PORT)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
        ("fe80::1:2", ("fe80::1:2", DEFAULT_PORT)),
    ],
)
def test_parse_hostport_default_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default_port=DEFAULT_PORT) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", "host", "::1", "[::1]",  # no port and no default
        "[::1", "[::1]x", "[::1]:", "[]:80", ":80", "host:", "host:abc", "host:65536",
        "host:-1", "host:+1", "host:8 0", "host:0x50",
    ],
)
def test_parse_hostport_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text)


@pytest.mark.parametrize("text", ["", "[::1", "[]:80", ":80", "[::1]x"])
def test_parse_hostport_errors_even_with_a_default(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text, default_port=DEFAULT_PORT)


@pytest.mark.parametrize("text", ["host:\u00b2", "host:\u0661\u0662", "host:\uff18\uff10"])
def test_parse_hostport_rejects_non_ascii_digits(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text)


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("example.com", 80, "example.com:80"),
        ("::1", 7420, "[::1]:7420"),
        ("1.2.3.4", 0, "1.2.3.4:0"),
    ],
)
def test_format_hostport_round_trips(host: str, port: int, text: str) -> None:
    assert format_hostport(host, port) == text
    assert parse_hostport(text) == (host, port)


# -- NodeConfig -----------------------------------------------------------------------------


def config(tmp_path: Path, **over: Any) -> NodeConfig:
    return NodeConfig(socket_path=tmp_path / "sock", data_dir=tmp_path / "data", **over)


def test_defaults_are_valid(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.max_payload + MAX_TOPIC_BYTES + 256 <= cfg.max_frame
    assert 1 <= cfg.max_hops <= 255
    assert cfg.max_request_line > cfg.max_payload * 4 // 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_hops = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "over",
    [
        {"name": "n" * 64},
        {"name": "é" * 32},
        {"listen_port": 0},
        {"listen_port": 65535},
        {"max_hops": 255},
        {"max_hops": 1},
        {"max_frame": MIN_FRAME, "max_payload": MIN_FRAME - MAX_TOPIC_BYTES - 256},
        {"redial_initial": 2.0, "redial_max": 2.0},
        {"seen_ttl": math.inf},
        {"peer_pings_per_s": 2.0},
        {"ping_interval": 0.2, "link_timeout": 0.6},
    ],
)
def test_boundaries_are_accepted(tmp_path: Path, over: dict[str, Any]) -> None:
    cfg = config(tmp_path, **over)
    for key, value in over.items():
        assert getattr(cfg, key) == value


POSITIVE_INTS = [
    "max_frame", "max_payload", "link_queue_bytes", "client_queue_bytes", "read_size",
    "max_hops", "seen_max_entries", "max_links", "max_clients",
]
POSITIVE_FLOATS = ["seen_ttl", "handshake_timeout", "dial_timeout", "redial_initial", "redial_max",
                   "peer_pings_per_s", "client_replays_per_s"]

INVALID: list[Any] = [
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": "n" * 65}, "name", id="name-too-long"),
    pytest.param({"name": "é" * 33}, "name", id="name-too-many-bytes"),
    pytest.param({"name": "a\nb"}, "name", id="name-control"),
    pytest.param({"listen_port": -1}, r"listen.port", id="port-negative"),
    pytest.param({"listen_port": 65536}, r"listen.port", id="port-too-big"),
    *(pytest.param({f: 0}, f, id=f"{f}-zero") for f in POSITIVE_INTS),
    *(pytest.param({f: -1}, f, id=f"{f}-negative") for f in POSITIVE_INTS),
    *(pytest.param({f: 0.0}, f, id=f"{f}-zero") for f in POSITIVE_FLOATS),
    *(pytest.param({f: math.nan}, f, id=f"{f}-nan") for f in POSITIVE_FLOATS),
    pytest.param(
        {"max_frame": MIN_FRAME, "max_payload": MIN_FRAME - MAX_TOPIC_BYTES - 255},
        "max_frame", id="frame-too-small-for-payload",
    ),
    pytest.param({"max_frame": MIN_FRAME - 1, "max_payload": 1000}, "max_frame",
                 id="frame-under-the-minimum"),
    pytest.param({"history_age": 301.0}, "history_age", id="history-older-than-seen"),
    pytest.param({"gossip": "star"}, "gossip", id="gossip-unknown"),
    pytest.param({"order_hold": 0.0}, "order_hold", id="order-hold-zero"),
    pytest.param({"history_bytes": -1}, "history_bytes", id="history-bytes-negative"),
    pytest.param({"mesh_interval": -1.0}, "mesh_interval", id="mesh-interval-negative"),
    pytest.param({"max_hops": 256}, "max_hops", id="hops-over-255"),
    pytest.param({"redial_initial": 3.0, "redial_max": 2.0}, "redial_max", id="redial-order"),
    pytest.param({"peer_pings_per_s": 1.9}, "peer_pings_per_s", id="pings-under-twice-ours"),
    pytest.param({"ping_interval": 0.1, "link_timeout": 0.3}, "peer_pings_per_s",
                 id="pinging-faster-than-peers-allow"),
]


@pytest.mark.parametrize(("over", "setting"), INVALID)
def test_validation_errors_name_the_setting(
    tmp_path: Path, over: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, **over)
    assert re.search(setting, str(info.value))
    assert isinstance(info.value, LocalError)
