"""The local API socket's file: bind it safely, and remove it only if it is still ours.

The default path's directory (``config.private_socket_dir()``) is made private and
checked before use (no other directory is ever created); at any path, a stale socket
file is replaced only when nothing listens on it, and anything else there is left
alone (docs/security.md, "Local clients").
"""

from __future__ import annotations

import logging
import os
import socket as stdsocket
import stat
from pathlib import Path

import trio

from ..config.settings import private_socket_dir
from ..errors import ConfigError, SocketInUse
from ..identity.owners import ensure_private_dir, peer_credentials, user_label

log = logging.getLogger("p2pnode.api")


async def bind_unix_socket(path: Path) -> trio.socket.SocketType:
    """Bind and listen on a Unix socket at ``path`` with mode 0600.

    A stale socket file (nobody listening) is replaced; a live one is not. The
    private default directory is created (mode 0700) and checked first; any other
    directory must exist. Raises ``SocketInUse``, ``UnsafePath``, ``ConfigError`` or
    ``OSError``.
    """
    if _prepare_parent(path):
        await _check_stale(path)
        os.unlink(path)
    raw = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        # Bound here, not with trio's ``bind``: that one runs in a worker thread, and
        # a node started under a virtual clock (tests, simulations) would see the clock
        # jump on while the thread runs (tens of seconds, under load). A bind is a quick
        # filesystem call, like the chmod below.
        raw.bind(str(path))
    except OSError:
        raw.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    raw.listen(128)
    await trio.lowlevel.checkpoint()
    return trio.socket.from_stdlib_socket(raw)


def _prepare_parent(path: Path) -> bool:
    """Create the private default directory if needed (and check it, see
    ``owners.ensure_private_dir``); any other directory must exist already (a mistyped
    path is refused, not created). Return True if ``path`` exists. Raises
    ``ConfigError``."""
    if path.parent == private_socket_dir():
        ensure_private_dir(path.parent)
    elif not path.parent.is_dir():
        raise ConfigError(f"the socket's directory {path.parent} does not exist (or is not a "
                          "directory); create it first, or choose another --socket")
    return path.exists() or path.is_symlink()


def _owner_note(st: os.stat_result) -> str:
    return "" if st.st_uid == os.geteuid() else f" (it belongs to {user_label(st.st_uid)})"


async def _check_stale(path: Path) -> None:
    """Raise ``SocketInUse`` unless ``path`` is a socket file nobody listens on."""
    st = os.lstat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket{_owner_note(st)}; not replacing "
                          "it: remove it, or choose another --socket")
    probe = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        with trio.move_on_after(2) as scope:
            await probe.connect(str(path))
        if scope.cancelled_caught:
            raise SocketInUse(f"another node seems to serve {path} (it accepts but is slow)")
        try:
            uid = peer_credentials(probe).uid
        except OSError:
            uid = os.geteuid()
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("replacing stale socket file %s", path)
        return
    finally:
        probe.close()
    if uid == os.geteuid():
        raise SocketInUse(f"another node is already serving {path}")
    raise SocketInUse(f"a process of {user_label(uid)} is already serving {path}; not "
                      "replacing it: stop it (as that user or root), or choose another --socket")


def remove_if_ours(path: Path, ident: os.stat_result) -> None:
    """Remove the socket file at ``path`` if it is still the one described by ``ident``."""
    try:
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (ident.st_dev, ident.st_ino):
            path.unlink()
    except OSError:
        pass
