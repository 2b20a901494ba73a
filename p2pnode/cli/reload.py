"""``p2pnode run`` on SIGHUP: read the settings again, as at start (the configuration
file and the ``P2PNODE_*`` variables; the flags stay), apply what can change while the
node runs, and say what changed and what needs a restart.

Applied at once: ``log_level``, ``peers`` (new ones dialled, removed ones no longer
redialled), ``health_min_links``, ``tags``, the event handlers and the limits
``max_hops``, ``history_bytes``, ``history_age`` and ``order_hold``
(``p2pnode.node.reload.LIVE_FIELDS``). Any other
change is named and waits for a restart. Settings that do not read or do not fit
are reported, and the node keeps the ones it runs with.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.file import RunSettings
from ..config.settings import format_hostport
from ..errors import ConfigError
from .logs import announce

if TYPE_CHECKING:
    from ..node.node import Node

#: ``NodeConfig`` fields by the name of their setting (file key, flag), where the two
#: differ.
_SETTING = {"listen_host": "listen", "listen_port": "listen", "socket_path": "socket",
            "event_handlers": "on_events"}
#: Settings of the command itself (not of the node) that only a restart changes.
_RESTART_ONLY = ("log_format", "metrics")


def _text(value: Any) -> str:
    """A setting's value as the operator wrote it."""
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        if all(isinstance(v, str) for pair in value for v in pair):  # tags, handlers
            return "[" + ", ".join(f"{k}={v}" for k, v in value) + "]"
        return "[" + ", ".join(format_hostport(str(h), int(p)) for h, p in value) + "]"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, Path):
        return str(value)
    return "none" if value is None else str(value)


def reload_settings(node: Node, current: RunSettings,
                    read: Callable[[], RunSettings]) -> RunSettings:
    """Read the settings with ``read`` and apply them to ``node``; returns the settings
    now in effect (``current`` if the new ones cannot be read or do not fit)."""
    fmt = current.log_format
    try:
        new = read()
        done = node.reconfigure(new.node)
    except (ConfigError, OSError, ValueError) as exc:
        announce(fmt, f"reload failed, the settings stay as they were: {exc}",
                 level="error", reason=str(exc))
        return current
    changed = [f"{_SETTING.get(k, k)} {_text(a)} -> {_text(b)}"
               for k, (a, b) in done.applied.items() if k != "peers"]
    if done.peers_added or done.peers_removed:
        changed.append("peers: " + "; ".join(
            part for part in (_joined("dialling", done.peers_added),
                              _joined("no longer redialling", done.peers_removed)) if part))
    if new.log_level != current.log_level:
        logging.getLogger().setLevel(new.log_level.upper())
        changed.append(f"log_level {current.log_level} -> {new.log_level}")
    if new.health_min_links != current.health_min_links:
        changed.append(f"health_min_links {current.health_min_links} -> "
                       f"{new.health_min_links}")
    restart = sorted({_SETTING.get(k, k) for k in done.restart}
                     | {k for k in _RESTART_ONLY if getattr(new, k) != getattr(current, k)})
    message = "reloaded the settings: " + ("; ".join(changed) if changed else "no change")
    if restart:
        message += f"; changed but not applied until a restart: {', '.join(restart)}"
    announce(fmt, message, changed=changed, restart_needed=restart)
    kept = {k: getattr(current, k) for k in _RESTART_ONLY}
    return dataclasses.replace(new, node=node.config, **kept)


def _joined(what: str, addrs: tuple[str, ...]) -> str:
    return f"{what} {', '.join(addrs)}" if addrs else ""
