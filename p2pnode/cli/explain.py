"""What went wrong, told to the user: failures of the environment (no node at the
socket, a port in use, a directory that does not exist) as messages that name the path
or the address, the problem, and the flag to change. ``main`` prints them; nothing here
prints."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from ..client import Client
from ..client import open_client as _open_client
from ..config.settings import default_socket_path, format_hostport, socket_path_problem
from ..errors import P2PError


class NoNode(P2PError, ConnectionError):
    """The client commands cannot reach a node at the socket (an ``OSError`` too, so
    that code that retries on ``OSError`` still does)."""


def missing_part(path: Path) -> str | None:
    """Why ``path`` cannot be created: ``"directory D does not exist"``, ``"F is not a
    directory"`` (for the nearest ancestor that exists), or None when its directory
    exists."""
    parent = path.parent
    if parent.is_dir():
        return None
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    return f"directory {parent} does not exist"


def os_error(exc: OSError) -> str:
    """An ``OSError`` as ``PATH: problem`` (``directory D does not exist`` for a missing
    directory), or its text without ``[Errno N]``."""
    text = exc.strerror or str(exc)
    if exc.filename is None:
        return text
    path = Path(os.fsdecode(exc.filename))
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        text = missing_part(path) or text
    return f"{path}: {text}"


async def open_client(path: Path | None, *, server_user: str | None = None) -> Client:
    """``p2pnode.client.open_client`` for the commands: a socket that cannot be reached
    raises ``NoNode`` saying why (no such file, not a socket, nothing listening, too long
    a path, no access)."""
    target = path if path is not None else default_socket_path()
    if problem := socket_path_problem(target):
        source = ("--socket" if path is not None else
                  "P2PNODE_SOCKET=" if os.environ.get("P2PNODE_SOCKET") else "the default socket")
        raise NoNode(f"{source}{'' if source.endswith('=') else ' '}{target}: {problem}")
    try:
        return await _open_client(target, server_user=server_user)
    except OSError as exc:
        raise NoNode(socket_failure(target, exc)) from None


def socket_failure(target: Path, exc: OSError) -> str:
    """Why connecting to the socket ``target`` failed with ``exc``."""
    hint = "is `p2pnode run` running, and is --socket right?"
    if isinstance(exc, PermissionError):
        return (f"no access to the socket {target} ({exc.strerror}): it or its directory "
                "belongs to another user; run this as the node's user (or a member of its "
                "--api-group)")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        problem = missing_part(target)
        if problem is not None:
            return f"no node at the socket {target}: {problem}; {hint}"
        return f"no node at the socket {target} (No such file or directory); {hint}"
    if isinstance(exc, ConnectionRefusedError):
        try:
            mode = os.stat(target).st_mode
        except OSError:
            mode = stat.S_IFSOCK
        if not stat.S_ISSOCK(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a file"
            return f"{target} is {kind}, not a node's socket; is --socket right?"
        return (f"no node at the socket {target} (Connection refused: the socket file is "
                f"left from a node that stopped); {hint}")
    return f"cannot connect to the socket {target}: {exc.strerror or exc}"


def _flag(sources: Mapping[str, str], key: str) -> str:
    """The flag, variable or file key that set ``key`` (``FILE: listen``), or "the
    default"."""
    return sources.get(key, "the default")


def listen_failure(exc: OSError, host: str, port: int, sources: Mapping[str, str],
                   key: str = "listen", flag: str = "--listen") -> str:
    """Why listening on ``host:port`` failed with ``exc``; ``key`` and ``flag`` name the
    setting (``listen``/``--listen``, ``metrics``/``--metrics``)."""
    from ..discovery.interfaces import interface_summary

    addr = format_hostport(host, port)
    where = _flag(sources, key)
    if isinstance(exc, socket.gaierror):
        return (f"cannot listen on {addr} ({where}): cannot resolve the host {host!r} "
                f"({exc.strerror}); give an address of this machine ({interface_summary()}) "
                "or 0.0.0.0 for all of them")
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {addr} ({where}): the port is in use by another program "
                f"(another p2pnode?); choose another port with {flag} HOST:PORT "
                "(port 0 picks a free one)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {addr} ({where}): {host} is not an address of this "
                f"machine; its interfaces have: {interface_summary()} (0.0.0.0: all of them)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {addr} ({where}): permission denied (ports below 1024 "
                f"need root); choose a port above 1023 with {flag}")
    return f"cannot listen on {addr} ({where}): {exc.strerror or exc}"
