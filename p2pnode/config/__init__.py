"""Settings: ``NodeConfig`` (every limit and timeout, validated; ``settings``) and the
settings of ``p2pnode run`` from flags, variables and a TOML file (``file``, loaded on
first use of its names)."""

from typing import TYPE_CHECKING

from .. import _lazy
from .settings import (
    DEFAULT_PORT,
    DEFAULT_TOPIC,
    MAX_TOPIC_BYTES,
    MIN_FRAME,
    NodeConfig,
    default_data_dir,
    default_socket_path,
    format_hostport,
    parse_hostport,
    private_socket_dir,
)

if TYPE_CHECKING:
    from .file import KEYS, RunSettings, SettingsError, build_settings, gather, load_file

__all__ = ["DEFAULT_PORT", "DEFAULT_TOPIC", "KEYS", "MAX_TOPIC_BYTES", "MIN_FRAME", "NodeConfig",
           "RunSettings", "SettingsError", "build_settings", "default_data_dir",
           "default_socket_path", "format_hostport", "gather", "load_file", "parse_hostport",
           "private_socket_dir"]
__getattr__ = _lazy(__name__, {"file": ("KEYS", "RunSettings", "SettingsError",
                                        "build_settings", "gather", "load_file")})
