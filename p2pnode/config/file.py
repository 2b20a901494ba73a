"""The settings of ``p2pnode run``, from its flags, the environment and a TOML file.

Every ``run`` flag has a key in the file and an environment variable
(docs/cli.md, "Configuration file and environment"):

- the key is the flag's long name with dashes as underscores (``--data-dir`` is
  ``data_dir``); a repeatable flag takes a list and its key is plural (``--peer``
  is ``peers``); ``--no-mdns`` is ``mdns = false``;
- the variable is ``P2PNODE_`` and the key in capitals (``P2PNODE_DATA_DIR``); a
  list is separated by commas or spaces, a boolean is ``1/0``, ``true/false``,
  ``yes/no`` or ``on/off``.

A flag wins over the environment, which wins over the file, which wins over the
default. A list given at a higher level replaces the lower one. Relative paths in
a file are relative to the file's directory.

Anything wrong in the file or the environment raises ``SettingsError``, which
names the file and the key (or the variable).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .settings import (
    DEFAULT_PORT,
    INSECURE_WITH_KEY,
    MAX_EVENT_HANDLERS,
    NodeConfig,
    host_problem,
    parse_hostport,
    socket_path_problem,
)
from .tags import pairs_problem, parse_tag

ENV_PREFIX = "P2PNODE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ConfigError):
    """A configuration file or ``P2PNODE_*`` variable is wrong (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One setting: its file key, its flag, its argparse destination and its type."""

    name: str
    flag: str
    dest: str
    kind: str  # "str", "path", "int", "float", "bool", "list", "choice"
    choices: tuple[str, ...] = ()
    negated: bool = False  # the flag sets the opposite boolean (--no-mdns: mdns = false)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


KEYS: tuple[Key, ...] = (
    Key("listen", "--listen", "listen", "str"),
    Key("socket", "--socket", "socket", "path"),
    Key("peers", "--peer", "peer", "list"),
    Key("name", "--name", "name", "str"),
    Key("tags", "--tag", "tag", "list"),
    Key("data_dir", "--data-dir", "data_dir", "path"),
    Key("mdns", "--no-mdns", "no_mdns", "bool", negated=True),
    Key("mdns_interfaces", "--mdns-interface", "mdns_interface", "list"),
    Key("peer_exchange", "--no-peer-exchange", "no_peer_exchange", "bool", negated=True),
    Key("advertise", "--advertise", "advertise", "str"),
    Key("max_hops", "--max-hops", "max_hops", "int"),
    Key("gossip", "--gossip", "gossip", "choice", ("tree", "flood", "interest")),
    Key("history_bytes", "--history-bytes", "history_bytes", "int"),
    Key("history_age", "--history-age", "history_age", "float"),
    Key("order_hold", "--order-hold", "order_hold", "float"),
    Key("retained_max_topics", "--retained-max-topics", "retained_max_topics", "int"),
    Key("retained_max_bytes", "--retained-max-bytes", "retained_max_bytes", "int"),
    Key("store", "--store", "store", "str"),
    Key("store_age", "--store-age", "store_age", "float"),
    Key("store_bytes", "--store-bytes", "store_bytes", "int"),
    Key("sync", "--sync", "sync", "choice", ("off", "normal", "full")),
    Key("max_durables", "--max-durables", "max_durables", "int"),
    Key("durable_max_unacked", "--durable-max-unacked", "durable_max_unacked", "int"),
    Key("network_key", "--network-key", "network_key", "path"),
    Key("insecure", "--insecure", "insecure", "bool"),
    Key("api_group", "--api-group", "api_group", "str"),
    Key("log_level", "--log-level", "log_level", "choice", LOG_LEVELS),
    Key("log_format", "--log-format", "log_format", "choice", LOG_FORMATS),
    Key("metrics", "--metrics", "metrics", "str"),
    Key("health_min_links", "--health-min-links", "health_min_links", "int"),
    Key("on_events", "--on-event", "on_event", "list"),
    Key("event_timeout", "--event-timeout", "event_timeout", "float"),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What ``p2pnode run`` does, all layers merged. ``sources`` says where each
    value came from (``--listen``, ``P2PNODE_LISTEN``, ``FILE: listen``)."""

    node: NodeConfig
    log_level: str = "info"
    log_format: str = "text"
    metrics: tuple[str, int] | None = None
    health_min_links: int = 0  # /healthz: unhealthy with fewer links
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _check_type(key: Key, value: object, where: str) -> object:
    """Check a value from a TOML file against the key's type; return it."""
    ok = {
        "str": isinstance(value, str), "path": isinstance(value, str),
        "int": type(value) is int, "bool": type(value) is bool,
        "float": type(value) in (int, float),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "choice": isinstance(value, str) and value in key.choices,
    }[key.kind]
    if not ok:
        raise SettingsError(f"{where}: {key.name} must be {_describe(key)}, "
                            f"not {_toml_repr(value)}")
    return value


def _describe(key: Key) -> str:
    if key.kind == "choice":
        return "one of " + ", ".join(f'"{c}"' for c in key.choices)
    return {"str": "a string", "path": "a path (a string)", "int": "an integer",
            "float": "a number",
            "bool": "true or false", "list": "a list of strings"}[key.kind]


def _toml_repr(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"


def load_file(path: Path, problems: list[str] | None = None) -> dict[str, tuple[object, str]]:
    """Read a TOML configuration file: ``{key: (value, source)}``.

    Raises ``SettingsError`` for a missing or unreadable file, bad TOML, an unknown
    key or a value of the wrong type. With ``problems``, the last two are appended to
    it instead (and the key left out). Relative paths are made relative to the file.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    out: dict[str, tuple[object, str]] = {}
    for name, value in data.items():
        try:
            key = KEYS_BY_NAME.get(name)
            if key is None:
                known = ", ".join(k.name for k in KEYS)
                raise SettingsError(f"{path}: unknown key {name!r} (known keys: {known})")
            value = _check_type(key, value, str(path))
        except SettingsError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        if key.kind == "path" and isinstance(value, str):
            value = str(path.parent / Path(value).expanduser())
        out[name] = (value, f"{path}: {name}")
    return out


def from_env(environ: Mapping[str, str],
             problems: list[str] | None = None) -> dict[str, tuple[object, str]]:
    """The settings given by ``P2PNODE_*`` variables (empty ones are ignored).

    Raises ``SettingsError`` naming the variable when a value cannot be read (with
    ``problems``: appends it there, and leaves the variable out).
    """
    out: dict[str, tuple[object, str]] = {}
    for key in KEYS:
        raw = environ.get(key.env, "").strip()
        if raw:
            try:
                out[key.name] = (_parse_env(key, raw), key.env)
            except SettingsError as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
    return out


def _parse_env(key: Key, raw: str) -> object:
    if key.kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(f"{key.env} must be 1/0, true/false, yes/no or on/off, "
                            f"not {raw!r}")
    if key.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{key.env} must be an integer, not {raw!r}") from None
    if key.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{key.env} must be a number, not {raw!r}") from None
    if key.kind == "list":
        return raw.replace(",", " ").split()
    if key.kind == "choice" and raw not in key.choices:
        raise SettingsError(f"{key.env} must be {_describe(key)}, not {raw!r}")
    return raw


def from_args(args: argparse.Namespace) -> dict[str, tuple[object, str]]:
    """The settings given by ``run``'s flags (a flag not given is None in ``args``)."""
    out: dict[str, tuple[object, str]] = {}
    for key in KEYS:
        value = getattr(args, key.dest, None)
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        out[key.name] = (not value if key.negated else value, key.flag)
    return out


def merge(*layers: dict[str, tuple[object, str]]) -> dict[str, tuple[object, str]]:
    """Merge layers, lowest precedence first."""
    merged: dict[str, tuple[object, str]] = {}
    for layer in layers:
        merged.update(layer)
    return merged


def gather(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    """All layers for ``args``: the file (``--config`` or ``$P2PNODE_CONFIG``), the
    environment, the flags. Raises ``SettingsError``."""
    config_path = args.config or environ.get(ENV_PREFIX + "CONFIG", "").strip() or None
    file_layer = load_file(Path(config_path)) if config_path else {}
    return merge(file_layer, from_env(environ), from_args(args))


#: The numeric settings of ``run``: (lowest, whether the lowest itself is allowed, highest
#: or None, what the highest is). Checked here, so that a message speaks of the flag, the
#: variable or the key that set the value; ``NodeConfig`` checks them again in its terms.
RANGES: dict[str, tuple[float, bool, float | None, str]] = {
    "max_hops": (1, True, 255, "the protocol's limit"),
    "history_bytes": (0, True, None, ""),
    "history_age": (0, False, NodeConfig.seen_ttl,
                    "seconds: how long a node remembers the ids of the messages it saw"),
    "order_hold": (0, False, None, ""),
    "store_age": (0, False, None, ""),
    "store_bytes": (0, True, None, ""),
    "max_durables": (1, True, 1_000_000, ""),
    "durable_max_unacked": (1, True, 100_000, ""),
    "event_timeout": (0, False, 3600, ""),
}


def where(values: Mapping[str, tuple[object, str]], name: str) -> str:
    """Where a value came from, with the value: ``--max-hops 0``,
    ``P2PNODE_MAX_HOPS=0`` or ``FILE: max_hops = 0``."""
    value, source = values[name]
    if isinstance(value, bool):
        return source
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if source.startswith("--"):
        return f"{source} {text if text and ' ' not in text else repr(text)}"
    if source.startswith(ENV_PREFIX):
        return f"{source}={text}"
    return f"{source} = {text if isinstance(value, int | float) else repr(text)}"


def _check_ranges(values: Mapping[str, tuple[object, str]]) -> None:
    for name, (low, inclusive, high, why) in RANGES.items():
        if name not in values:
            continue
        value = values[name][0]
        assert isinstance(value, int | float)
        problem = None
        if not math.isfinite(value):
            problem = "must be a finite number"
        elif value < low or (value == low and not inclusive):
            problem = f"must be {'at least' if inclusive else 'greater than'} {low:g}"
        elif high is not None and value > high:
            problem = f"must be at most {high:g} ({why})"
        if problem:
            raise _error(values, name, f"{where(values, name)}: {problem}")


def _error(values: Mapping[str, tuple[object, str]], name: str, message: str) -> ConfigError:
    """``ConfigError`` for a value a flag gave (exit status 1), ``SettingsError`` for
    one from the file or the environment (exit status 2)."""
    error = (ConfigError if values[name][1].startswith("--") else SettingsError)(message)
    error.key = name
    return error


def _check_combinations(values: Mapping[str, tuple[object, str]]) -> None:
    if values.get("insecure", (False, ""))[0] and values.get("network_key", ("", ""))[0]:
        one, other = values["insecure"][1], values["network_key"][1]
        file, _, key = one.rpartition(": ")
        both = (f"{file}: {key} and {other.rpartition(': ')[2]}"
                if file and other.startswith(f"{file}: ") else f"{one} and {other}")
        raise _error(values, "insecure", f"{both} cannot be used together: {INSECURE_WITH_KEY}")
    if values.get("advertise", ("", ""))[0]:
        problem = host_problem(str(values["advertise"][0]))
        if problem:
            raise _error(values, "advertise", f"{where(values, 'advertise')}: {problem}")
    if values.get("socket", ("", ""))[0]:
        problem = socket_path_problem(str(values["socket"][0]))
        if problem:
            raise _error(values, "socket", f"{where(values, 'socket')}: {problem}")


def _listen_text(values: Mapping[str, tuple[object, str]]) -> str:
    """``listen``, where a bare port means every interface (``7001``: ``0.0.0.0:7001``)."""
    text = str(values["listen"][0]).strip() if "listen" in values else ""
    if not text:
        return f"0.0.0.0:{DEFAULT_PORT}" if "listen" not in values else text
    return f"0.0.0.0:{text}" if text.isascii() and text.isdigit() else text


def build_settings(values: dict[str, tuple[object, str]]) -> RunSettings:
    """Turn merged values into ``RunSettings``.

    Raises ``SettingsError`` for a bad value from a file or the environment and
    ``ConfigError`` for a bad flag value; both name where the value came from.
    """
    def get(name: str, default: Any = None) -> Any:
        return values[name][0] if name in values else default

    def fail(name: str, exc: ConfigError) -> ConfigError:
        return _error(values, name, f"{values[name][1]}: {exc}")

    _check_ranges(values)
    _check_combinations(values)
    kwargs: dict[str, Any] = {}
    try:
        host, port = parse_hostport(_listen_text(values), default_port=DEFAULT_PORT)
    except ConfigError as exc:
        raise fail("listen", exc) from None
    try:
        peers = tuple(parse_hostport(p, default_port=DEFAULT_PORT) for p in get("peers", []))
    except ConfigError as exc:
        raise fail("peers", exc) from None
    metrics = None
    if get("metrics"):
        try:
            metrics = parse_hostport(get("metrics"))
        except ConfigError as exc:
            raise fail("metrics", exc) from None
    tags = _pairs(values, "tags", parse_tag)
    handlers = _pairs(values, "on_events", parse_handler)
    health_min_links = get("health_min_links", 0)
    if health_min_links < 0:
        raise fail("health_min_links", ConfigError("health_min_links must be at least 0"))
    name = get("name") if "name" in values else (os.uname().nodename or "node")[:64]
    kwargs.update(
        listen_host=host, listen_port=port, peers=peers, mdns=get("mdns", True),
        mdns_interfaces=tuple(get("mdns_interfaces", [])), advertise=get("advertise"),
        name=name, insecure=get("insecure", False), tags=tags, event_handlers=handlers,
        api_group=get("api_group"), peer_exchange=get("peer_exchange", True),
        network_key=Path(get("network_key")) if get("network_key") else None,
    )
    for key in ("max_hops", "gossip", "history_bytes", "history_age", "order_hold",
                "retained_max_topics", "retained_max_bytes", "store", "store_age",
                "store_bytes", "max_durables", "durable_max_unacked", "event_timeout"):
        if key in values:
            kwargs[key] = get(key)
    if "sync" in values:
        kwargs["store_sync"] = get("sync")
    for key in ("socket", "data_dir"):
        if get(key):
            kwargs["socket_path" if key == "socket" else key] = Path(get(key))
    try:
        node = NodeConfig(**kwargs)
    except ConfigError as exc:
        raise _config_error(values, exc) from None
    return RunSettings(node=node, log_level=get("log_level", "info"),
                       log_format=get("log_format", "text"), metrics=metrics,
                       health_min_links=health_min_links,
                       sources={k: v[1] for k, v in values.items()})


def parse_handler(text: str) -> tuple[str, str]:
    """``KIND=PATH`` (``--on-event``) as a pair; the kind and the program are checked
    when the node starts (``node.handlers``). Raises ``ValueError``."""
    kind, sep, path = text.partition("=")
    if not sep or not kind or not path:
        raise ValueError(f"{text[:80]!r}: expected KIND=PATH, such as "
                         "member_dead=/usr/local/bin/on-dead")
    return kind, path


def _pairs(values: Mapping[str, tuple[object, str]], name: str,
           parse: Callable[[str], tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A list setting of ``KEY=VALUE`` texts (``tags``, ``on_events``) as pairs. Raises
    ``ConfigError``/``SettingsError`` naming where the bad one came from."""
    if name not in values:
        return ()
    texts = values[name][0]
    assert isinstance(texts, list)
    if name == "on_events" and len(texts) > MAX_EVENT_HANDLERS:
        raise _error(values, name, f"{values[name][1]}: at most {MAX_EVENT_HANDLERS} "
                                   "handlers")
    try:
        pairs = tuple(parse(str(text)) for text in texts)
    except ValueError as exc:
        raise _error(values, name, f"{values[name][1]}: {exc}") from None
    if name == "tags" and (problem := pairs_problem(pairs)):
        raise _error(values, name, f"{values[name][1]}: {problem}")
    return pairs


def _config_error(values: Mapping[str, tuple[object, str]], exc: ConfigError) -> ConfigError:
    """``NodeConfig``'s error, which begins with its field's name, told in terms of the
    flag, variable or key that set the field (``--name '': must be ...``)."""
    text = str(exc)
    field = text.split()[0]
    name = {"listen_port": "listen", "socket_path": "socket", "store_sync": "sync",
            "event_handlers": "on_events"}.get(field, field)
    if name not in values:
        return exc
    return _error(values, name, f"{where(values, name)}: {text[len(field):].lstrip()}")


def check_settings(values: Mapping[str, tuple[object, str]]) -> tuple[RunSettings | None,
                                                                       list[str]]:
    """``build_settings`` that finds every problem, not only the first (for
    ``p2pnode check-config``): each bad value is reported and left out, and the rest
    built again. Returns the settings without the bad values (None if even that
    failed) and the problems."""
    remaining = dict(values)
    problems: list[str] = []
    for _ in range(len(KEYS) + 1):
        try:
            return build_settings(remaining), problems
        except ConfigError as exc:
            problems.append(str(exc))
            if exc.key is None or exc.key not in remaining:
                break
            del remaining[exc.key]
    return None, problems
