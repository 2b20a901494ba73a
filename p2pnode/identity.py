"""The node's persistent identity and its data directory.

The node id lives in ``DATA_DIR/node_id`` (32 hex digits, mode 0600), so a
restarted node is the same peer. A lock file keeps two running nodes from
sharing one data directory (and so one id).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import ConfigError
from .ids import id_to_hex, new_node_id, parse_id

ID_FILE = "node_id"
LOCK_FILE = "lock"


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (mode 0700) if missing. Raises ``ConfigError``."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {data_dir}: {exc}") from None
    if not data_dir.is_dir():
        raise ConfigError(f"data directory {data_dir} is not a directory")


def load_or_create_node_id(data_dir: Path) -> bytes:
    """Return the node id stored in ``data_dir``, creating it on first use.

    Raises ``ConfigError`` if the stored id is unreadable or malformed (it is
    never silently replaced: that would change the node's identity).
    """
    prepare_data_dir(data_dir)
    path = data_dir / ID_FILE
    try:
        return parse_id(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"bad node id file {path}: {exc}; remove it to make a new id") from None
    node_id = new_node_id()
    tmp = data_dir / f".{ID_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (id_to_hex(node_id) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return node_id


class DataDirLock:
    """An exclusive lock on a data directory, held while the node runs.

    Raises ``ConfigError`` on ``acquire`` if another process holds it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        prepare_data_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
