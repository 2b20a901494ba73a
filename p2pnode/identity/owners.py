"""Who owns what: the checks against other local users (docs/security.md, "Local clients").

- The private socket directory (``/tmp/p2pnode-UID``, where the default socket lives
  when there is no ``$XDG_RUNTIME_DIR``): created with mode 0700, and refused if it is
  a symbolic link, not a directory, not ours, or open to group or others.
- The data directory: refused if it is not ours or is writable by group or others.
- Key files: refused if they are not ours (``keys.py`` also checks their mode).
- The server end of the local API socket: a client checks with ``SO_PEERCRED`` that
  the node runs as the client's own user, as root, or as the allowed server user
  (``server_user``, else ``$P2PNODE_SERVER_USER``) before it sends anything.

Nothing here imports trio: the blocking client, the node and the CLI share it.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError, UnsafePath, UntrustedServer

#: ``struct ucred`` (Linux): pid, uid, gid.
CREDS = struct.Struct("3i")
#: The environment variable that names one more user whose node clients may talk to.
SERVER_USER_ENV = "P2PNODE_SERVER_USER"


class SupportsSockopt(Protocol):
    """A socket (stdlib or trio) whose options can be read."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


@dataclass(frozen=True)
class PeerCred:
    """The kernel's record of the process at the other end of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: SupportsSockopt) -> PeerCred:
    """The peer's credentials (``SO_PEERCRED``). Raises ``OSError``."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, CREDS.size)
    return PeerCred(*CREDS.unpack(raw))


def user_label(uid: int) -> str:
    """``"alice (uid 1000)"``, or ``"uid 1000"`` for a uid without a name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _you() -> str:
    """``"you (alice, uid 1000)"``: this process's user, for messages."""
    me = os.geteuid()
    name = _user_name(me)
    return f"you ({name}, uid {me})" if name != str(me) else f"you (uid {me})"


def resolve_user(user: str | int, where: str = "server_user") -> int:
    """A user id from a user name or number. Raises ``ConfigError`` naming ``where``."""
    if isinstance(user, int):
        uid = user
    elif user.isascii() and user.isdigit():
        uid = int(user)
    else:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise ConfigError(f"{where}: no user named {user!r}") from None
    if not 0 <= uid < 1 << 32:
        raise ConfigError(f"{where}: {user!r} is not a user id")
    return uid


def trusted_server_uids(server_user: str | int | None = None) -> frozenset[int]:
    """The users whose node a client talks to: its own, root, and ``server_user``
    (else ``$P2PNODE_SERVER_USER``, if set and not empty). Raises ``ConfigError``."""
    uids = {os.geteuid(), 0}
    where = "server_user"
    if server_user is None or server_user == "":
        server_user = os.environ.get(SERVER_USER_ENV) or None
        where = SERVER_USER_ENV
    if server_user is not None:
        uids.add(resolve_user(server_user, where))
    return frozenset(uids)


def check_server(sock: SupportsSockopt, path: str | os.PathLike[str],
                 server_user: str | int | None = None) -> int:
    """Check, before sending anything, who serves the connected socket ``sock``.

    Returns the server's uid when it is trusted (``trusted_server_uids``); raises
    ``UntrustedServer`` otherwise, or when the kernel cannot tell (``ConfigError``
    for a ``server_user`` that names no user).
    """
    allowed = trusted_server_uids(server_user)
    try:
        uid = peer_credentials(sock).uid
    except OSError as exc:
        raise UntrustedServer(str(path), -1, f"cannot tell who serves the socket {path} "
                              f"({exc.strerror}); not using it") from None
    if uid in allowed:
        return uid
    trusted = [_you(),
               *(user_label(u) for u in sorted(allowed - {os.geteuid()}))]
    either = " or ".join([", ".join(trusted[:-1]), trusted[-1]] if len(trusted) > 1 else trusted)
    raise UntrustedServer(
        str(path), uid,
        f"the socket {path} is served by {user_label(uid)}, not by {either}: "
        "a process of another user, "
        "which would read whatever you send; nothing was sent. If that user's node is "
        f"the one you mean to use, allow it with --server-user {_user_name(uid)} (or "
        f"{SERVER_USER_ENV}={_user_name(uid)}); otherwise find out who made "
        f"{Path(path).parent}.")


def ensure_private_dir(path: Path) -> None:
    """Create the directory ``path`` with mode 0700 if it is missing, then check that
    it is a directory (not a symbolic link) owned by this user with no access for group
    or others. Raises ``UnsafePath`` naming what is wrong and what to do."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafePath(f"cannot create the socket directory {path}: {exc.strerror}") from None
    else:
        os.chmod(path, 0o700)  # whatever the umask left
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafePath(f"cannot check the socket directory {path}: {exc.strerror}") from None
    me = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    owner = user_label(st.st_uid)
    if stat.S_ISLNK(st.st_mode):
        problem, fix = (f"is a symbolic link made by {owner}",
                        f"remove it (rm {path}, as its owner or root)")
    elif not stat.S_ISDIR(st.st_mode):
        problem, fix = (f"is a file of {owner}, not a directory",
                        f"remove it (rm {path}, as its owner or root)")
    elif st.st_uid != me:
        problem, fix = (f"is owned by {owner}, not by {_you()}",
                        f"remove it (rm -r {path}, as its owner or root)")
    elif mode & 0o077:
        problem, fix = (f"is open to group or others (mode {mode:04o})", f"run: chmod 700 {path}")
    else:
        return
    raise UnsafePath(
        f"the socket directory {path} {problem}: another user could block the node or "
        f"catch what its clients send, so it is not used. To fix it, {fix}; or choose "
        "another socket path with --socket or P2PNODE_SOCKET.")


def check_data_dir(path: Path) -> None:
    """Refuse a data directory that another user could write into (and so replace the
    node's identity key in). Raises ``UnsafePath``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot check data directory {path}: {exc.strerror}") from None
    me = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != me:
        raise UnsafePath(
            f"data directory {path} is owned by {user_label(st.st_uid)}, not by "
            f"{_you()}: that user could replace the node's identity key. Use a "
            f"directory of your own (--data-dir), or if it is yours: chown {_user_name(me)} "
            f"{path}")
    if mode & 0o022:
        raise UnsafePath(
            f"data directory {path} is writable by group or others (mode {mode:04o}): "
            f"they could replace the node's identity key. Run: chmod go-w {path}")


def check_owned_file(st: os.stat_result, path: Path, what: str) -> None:
    """Refuse a file (``st``: its ``fstat``) that another user owns. Raises ``UnsafePath``."""
    me = os.geteuid()
    if st.st_uid != me:
        raise UnsafePath(
            f"{what} {path} is owned by {user_label(st.st_uid)}, not by "
            f"{_you()}: another user could have put their own key there. If the "
            f"key is yours, run: chown {_user_name(me)} {path}; if not, remove it")
