"""Settings: ``NodeConfig`` (every limit and timeout, validated) and the config file."""

from .settings import (
    DEFAULT_PORT,
    DEFAULT_TOPIC,
    MAX_TOPIC_BYTES,
    NodeConfig,
    default_data_dir,
    default_socket_path,
    format_hostport,
    parse_hostport,
)

__all__ = ["DEFAULT_PORT", "DEFAULT_TOPIC", "MAX_TOPIC_BYTES", "NodeConfig", "default_data_dir",
           "default_socket_path", "format_hostport", "parse_hostport"]
