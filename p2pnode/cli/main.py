"""The ``p2pnode`` command: run a node, make a network key, or run a client command
(``commands``) against a running node; the flags are in ``parser``."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from ..client import ApiReplyError
from ..config.file import RunSettings, SettingsError, build_settings, gather
from ..config.settings import format_hostport
from ..errors import ConfigError, LocalError, P2PError, single_error
from .checkconfig import cmd_check_config
from .checks import check_client_args, check_output_file, preflight
from .commands import COMMANDS
from .explain import listen_failure, os_error
from .logs import announce, setup_logging
from .metrics import serve_metrics
from .parser import parse_command_line
from .reload import reload_settings
from .sdnotify import notify

if TYPE_CHECKING:
    import argparse

    from ..node.node import Node


async def run_node(settings: RunSettings,
                   reread: Callable[[], RunSettings] | None = None) -> None:
    """Run a node until SIGINT or SIGTERM, then leave gracefully. On SIGHUP, read the
    settings again with ``reread`` and apply what can change (``reload``)."""
    from ..node.node import Node

    config, fmt = settings.node, settings.log_format
    node = Node(config)
    current = [settings]  # the settings in effect (a SIGHUP changes them)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await _start(nursery, node, settings)
            quiet_gc()
            announce(fmt, f"node {config.name} ({node.node_hex}) listening on "
                     f"{node.listen_str}, socket {config.socket_path}", node_id=node.node_hex,
                     name=config.name, listen=node.listen_str, socket=config.socket_path)
            announce(fmt, security_summary(node))
            if settings.metrics is not None:
                try:
                    host, port = await nursery.start(
                        serve_metrics, *settings.metrics, node.status_info,
                        lambda: node.health(current[0].health_min_links))
                except OSError as exc:
                    raise LocalError(listen_failure(exc, *settings.metrics, settings.sources,
                                                    "metrics", "--metrics")) from None
                announce(fmt, f"metrics on http://{format_hostport(host, port)}/metrics",
                         metrics=format_hostport(host, port))
            notify(f"READY=1\nSTATUS=listening on {node.listen_str}")
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if reread is not None:
                        current[0] = reload_settings(node, current[0], reread)
                    continue
                logging.getLogger("p2pnode").info("signal %d: leaving", signum)
                break
            notify("STOPPING=1")
            await node.stop()
            nursery.cancel_scope.cancel()  # the metrics server


def quiet_gc() -> None:
    """Keep the garbage collector's pauses short once the node runs: what exists now
    (modules, classes, functions: tens of thousands of objects that live as long as
    the process) is moved out of the collector's sight (``gc.freeze``), so that a full
    collection looks only at what came after; young collections run every 20,000
    allocations instead of 700 (fewer pauses, each a few more objects). A full
    collection of the start-up objects took 25-75 ms in a node on this project's test
    machine: a message at 1,000/s waited for each (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def _start(nursery: trio.Nursery, node: Node, settings: RunSettings) -> None:
    """Start ``node``; a failure to listen or to serve the socket raises ``LocalError``
    naming the address or the path and the flag to change."""
    try:
        await nursery.start(node.run)
    except (OSError, BaseExceptionGroup) as exc:
        leaf = single_error(exc)
        if not isinstance(leaf, OSError):
            raise
        cfg = settings.node
        if node.listen_addr is None:  # it failed to listen
            message = listen_failure(leaf, cfg.listen_host, cfg.listen_port, settings.sources)
        else:
            message = f"cannot serve the local API socket {cfg.socket_path}: {os_error(leaf)}"
        raise LocalError(message) from None


def security_summary(node: Node) -> str:
    """One line that says how this node's links are protected."""
    if node.config.insecure:
        return ("WARNING: --insecure: links are plaintext and unauthenticated; "
                "use only for debugging")
    if node.network.is_open:
        return ("open network: links are encrypted (TLS 1.3), but any node may join; "
                "use --network-key to admit only members")
    return f"network {node.network_tag}: links are encrypted and admit only members"



def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "keygen":
            check_output_file(args.network, "--network")
            from ..identity.keys import generate_network_key  # X.509: only here

            key = generate_network_key(args.network)
            print(f"p2pnode: wrote network key {args.network} (network {key.tag}); copy it "
                  f"to each machine and run: p2pnode run --network-key {args.network}")
            return 0
        if args.command == "check-config":
            return cmd_check_config(args)
        if args.command == "run":
            def read() -> RunSettings:
                return build_settings(gather(args, os.environ))

            settings = read()
            if problems := preflight(settings):
                raise ConfigError(problems[0])
            setup_logging(settings.log_level, settings.log_format)
            trio.run(run_node, settings, read)
            return 0
        check_client_args(args)
        return trio.run(COMMANDS[args.command], args)
    except BaseExceptionGroup as group:
        leaf = single_error(group)
        if leaf is group:
            raise
        raise leaf from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``p2pnode`` command; returns the exit status."""
    args = parse_command_line(argv)
    try:
        return _dispatch(args)
    except SettingsError as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
        return 2
    except (P2PError, ApiReplyError, trio.EndOfChannel) as exc:
        print(f"p2pnode: error: {exc}", file=sys.stderr)
    except BrokenPipeError:  # the reader of our output left (`p2pnode recv | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # as a shell reports a command that SIGPIPE ended
    except OSError as exc:
        print(f"p2pnode: error: {os_error(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1
