"""``p2pnode check-config FILE``: check a configuration file the way ``run`` would (the
same code: the file, then the ``P2PNODE_*`` variables, ``build_settings`` and
``preflight``), without starting a node; print the settings it gives, or every
problem."""

from __future__ import annotations

import argparse
import os
import sys

from ..config.file import KEYS, RunSettings, check_settings, from_env, load_file, merge
from ..config.settings import format_hostport
from ..errors import ConfigError
from .checks import preflight


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print ``FILE: ok`` and the effective settings (exit 0), or each problem as
    ``p2pnode: error: ...`` (exit 1)."""
    problems: list[str] = []
    try:
        values = merge(load_file(args.file, problems), from_env(os.environ, problems))
    except ConfigError as exc:  # unreadable, or not TOML
        problems.append(str(exc))
        values = {}
    settings = None
    if not problems or values:
        settings, more = check_settings(values)
        problems += more
    if settings is not None:
        problems += preflight(settings)
    if problems:
        for problem in problems:
            print(f"p2pnode: error: {problem}", file=sys.stderr)
        print(f"{args.file}: {len(problems)} error{'s' if len(problems) > 1 else ''}",
              file=sys.stderr)
        return 1
    assert settings is not None
    print(f"{args.file}: ok")
    print("\n".join(settings_summary(settings)))
    return 0


def settings_summary(settings: RunSettings) -> list[str]:
    """One line per setting: its key, its effective value, and where it came from."""
    cfg = settings.node
    shown = {
        "listen": format_hostport(cfg.listen_host, cfg.listen_port),
        "socket": str(cfg.socket_path),
        "peers": ", ".join(format_hostport(h, p) for h, p in cfg.peers) or "none",
        "name": cfg.name,
        "data_dir": str(cfg.data_dir),
        "mdns": "on" if cfg.mdns else "off",
        "mdns_interfaces": ", ".join(cfg.mdns_interfaces) or "every suitable interface",
        "advertise": cfg.advertise or "the listen address",
        "max_hops": str(cfg.max_hops),
        "gossip": cfg.gossip,
        "history_bytes": str(cfg.history_bytes),
        "history_age": f"{cfg.history_age:g}",
        "order_hold": f"{cfg.order_hold:g}",
        "store": (f"{cfg.data_dir}/store.sqlite3" if cfg.store == "sqlite" else
                  "none (history in memory only)" if cfg.store == "none" else cfg.store),
        "sync": cfg.store_sync,
        "network_key": str(cfg.network_key) if cfg.network_key else "none (the open network)",
        "insecure": "yes" if cfg.insecure else "no",
        "api_group": cfg.api_group or "none (this user only)",
        "log_level": settings.log_level,
        "log_format": settings.log_format,
        "metrics": format_hostport(*settings.metrics) if settings.metrics else "off",
        "health_min_links": str(settings.health_min_links),
        "tags": ", ".join(f"{k}={v}" for k, v in cfg.tags) or "none",
        "on_events": ", ".join(f"{k}={v}" for k, v in cfg.event_handlers) or "none",
    }
    for key in KEYS:  # a key without a wording of its own: its value as it is
        if key.name not in shown:
            value = getattr(cfg, key.name, getattr(settings, key.name, "?"))
            shown[key.name] = str(value)
    width = max(len(v) for v in shown.values())
    names = max(len(key.name) for key in KEYS)
    return [f"  {key.name:<{names}} {shown[key.name]:<{width}}  "
            f"({settings.sources.get(key.name, 'default')})" for key in KEYS]
