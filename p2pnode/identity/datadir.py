"""The node's data directory: created with mode 0700, and locked while a node runs.

The directory holds the node's identity key (``node_key``, see ``keys.py``), so a
restarted node is the same peer. It must be the node's user's own and not writable by
group or others, or another user could swap in their own key (``owners.check_data_dir``).
The lock keeps two running nodes from sharing one data directory (and so one identity).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import ConfigError
from .owners import check_data_dir

LOCK_FILE = "lock"


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (mode 0700) if missing, and check that no other user
    can write into it. Raises ``ConfigError`` (``UnsafePath`` for the latter)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data directory {data_dir} exists and is not a directory; "
                          "choose another --data-dir")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and os.fsdecode(exc.filename) != str(data_dir):
            reason = f"{os.fsdecode(exc.filename)}: {reason}"
        raise ConfigError(f"cannot create data directory {data_dir}: {reason}") from None
    if not data_dir.is_dir():
        raise ConfigError(f"data directory {data_dir} is not a directory")
    check_data_dir(data_dir)


class DataDirLock:
    """An exclusive lock on a data directory, held while the node runs.

    Raises ``ConfigError`` on ``acquire`` if another process holds it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        prepare_data_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"data directory {self.path.parent} is in use by another node "
                "(give each node its own --data-dir)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
