"""Shared fixtures: short temporary directories (Unix socket paths are limited to
107 bytes) and real nodes on loopback TCP with real Unix sockets."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.config import NodeConfig
from p2pnode.node import Node


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="p2pt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def loopback_config(base: Path, name: str, **overrides: Any) -> NodeConfig:
    """A node config that listens on 127.0.0.1 (a free port) with its socket under base.
    No peer exchange: the links are the ``peers`` given (as ``memory_config``'s); pass
    ``peer_exchange=True`` to have nodes link to the members they learn of."""
    kwargs: dict[str, Any] = {
        "name": name, "listen_host": "127.0.0.1", "listen_port": 0, "mdns": False,
        "socket_path": base / f"{name}.sock", "data_dir": base / name,
        "redial_initial": 0.05, "redial_max": 0.5, "peer_exchange": False,
    }
    kwargs.update(overrides)
    return NodeConfig(**kwargs)


@asynccontextmanager
async def running_nodes(configs: list[NodeConfig]) -> AsyncIterator[list[Node]]:
    """Run real nodes (TCP + Unix socket) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        nodes = []
        for cfg in configs:
            node = Node(cfg)
            await nursery.start(node.run)
            nodes.append(node)
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()
