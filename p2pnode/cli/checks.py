"""Checks made before a command does its work, so that a mistake is reported at once,
before a node starts or a client connects, naming the flag, the path and the problem:
the client commands' arguments (``check_client_args``), output files
(``check_output_file``), and what ``run``'s settings need of this machine
(``preflight``: the socket's directory, the network key, the mDNS interfaces, the data
directory, the API group, the event handlers)."""

from __future__ import annotations

import argparse
import grp
import importlib
import os
import sys
from pathlib import Path

from ..config.file import RunSettings, where
from ..config.settings import private_socket_dir
from ..errors import ConfigError
from ..identity.owners import resolve_user
from .explain import missing_part


def check_output_file(path: Path, flag: str) -> None:
    """Raise ``ConfigError`` unless a file can be created at ``path`` (given by ``flag``):
    its directory exists and is writable, and ``path`` is not a directory."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; give a file name")
    if problem := missing_part(path):
        raise ConfigError(f"{flag} {path}: {problem}")
    parent = path.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write into the directory {parent} "
                          "(permission denied)")


def check_png(path: Path) -> None:
    """``mesh --png FILE``: a PNG file name in a writable directory, and matplotlib and
    networkx installed. Raises ``ConfigError``."""
    if path.suffix.lower() not in ("", ".png"):
        raise ConfigError(f"--png {path}: --png draws a PNG image, so the file name must end "
                          "in .png (for SVG: p2pnode mesh --dot | dot -Tsvg -o mesh.svg)")
    check_output_file(path, "--png")
    for module in ("matplotlib", "networkx"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"--png needs matplotlib and networkx ({module} is missing): "
                              "pip install 'p2pnode[sim]'") from None


def check_client_args(args: argparse.Namespace) -> None:
    """What the client commands' flags can be checked for before connecting (argparse
    checked the numbers already). Raises ``ConfigError``."""
    if args.command == "send" and args.topic == "*":
        raise ConfigError("--topic '*': '*' is the all-topics subscription of `p2pnode recv`, "
                          "not a topic; publish on a named topic")
    if args.command in ("send", "recv"):
        _check_text(args)
    if args.command == "mesh" and args.png is not None:
        check_png(args.png)
    if args.command == "recv" and args.since is not None:
        from .recv import parse_since_arg

        parse_since_arg(args.since)
    if args.command == "peers" and None not in (args.wait_min, args.wait_max) \
            and args.wait_min > args.wait_max:
        raise ConfigError(f"--wait-min {args.wait_min} is more than --wait-max "
                          f"{args.wait_max}: no number of peers is both")
    if args.server_user:
        resolve_user(args.server_user, "--server-user")


def _check_text(args: argparse.Namespace) -> None:
    """Topics and TEXT arguments are UTF-8 (the shell can pass any bytes); ``send``
    without TEXT needs a standard input."""
    topics = args.topic if isinstance(args.topic, list) else [args.topic]
    for topic in topics:
        if not _is_utf8(topic):
            shown = os.fsencode(topic).decode("utf-8", "backslashreplace")
            raise ConfigError(f"--topic '{shown}': a topic is UTF-8 text, and this is not")
    if args.command == "send":
        if not all(_is_utf8(word) for word in args.text):
            raise ConfigError("TEXT is not UTF-8 text; to send any bytes, give them on "
                              "standard input (one message per line)")
        if not args.text and sys.stdin is None:
            raise ConfigError("standard input is closed: give the message as TEXT, or the "
                              "messages on standard input")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the command line (surrogates)
        return False
    return True


def preflight(settings: RunSettings) -> list[str]:
    """What ``settings`` need of this machine and do not find, as messages (empty if
    all is well). Reads, creates nothing."""
    checks = (_socket_dir, _network_key, _mdns_interfaces, _data_dir, _api_group, _handlers)
    problems = []
    for check in checks:
        try:
            check(settings)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _where(settings: RunSettings, key: str, flag: str, value: object) -> str:
    """``--socket PATH``, ``P2PNODE_SOCKET=PATH`` or ``FILE: socket = 'PATH'``."""
    return where({key: (value, settings.sources.get(key, flag))}, key)


def _socket_dir(settings: RunSettings) -> None:
    path = settings.node.socket_path
    if path.parent == private_socket_dir():
        return  # the node makes it, and checks it is private
    problem = missing_part(path)
    if problem is not None:
        raise ConfigError(f"{_where(settings, 'socket', '--socket', path)}: {problem}; "
                          "create it first, or choose another socket path (the node "
                          "creates only its default directory)")


def _network_key(settings: RunSettings) -> None:
    if settings.node.network_key is not None:
        from ..identity.keys import NetworkKey  # cryptography: only when needed

        NetworkKey.load(settings.node.network_key)


def _mdns_interfaces(settings: RunSettings) -> None:
    cfg = settings.node
    if not cfg.mdns or not cfg.mdns_interfaces:
        return
    from ..discovery.interfaces import choose_interfaces, interface_summary, is_local_address

    source = settings.sources.get("mdns_interfaces", "--mdns-interface")
    try:
        choose_interfaces(cfg.mdns_interfaces)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for addr in cfg.mdns_interfaces:
        if not is_local_address(addr):
            raise ConfigError(f"{source} {addr}: no interface of this machine has this address; "
                              f"its interfaces have: {interface_summary()} (or use --no-mdns)")


def _data_dir(settings: RunSettings) -> None:
    path = settings.node.data_dir
    where = _where(settings, "data_dir", "--data-dir", path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: exists and is not a directory")
    if not path.exists():
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"{where}: {ancestor} is not a directory")


def _api_group(settings: RunSettings) -> None:
    group = settings.node.api_group
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ConfigError(f"{_where(settings, 'api_group', '--api-group', group)}: "
                              "no such group") from None


def _handlers(settings: RunSettings) -> None:
    """``--on-event``: known event kinds, programs that exist and are executable."""
    from ..node.handlers import handler_problem  # trio: only when needed

    source = settings.sources.get("on_events", "--on-event")
    for kind, path in settings.node.event_handlers:
        if problem := handler_problem(kind, path):
            raise ConfigError(f"{source} {problem}")
