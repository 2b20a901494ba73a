"""p2pnode: a peer-to-peer messaging node for local networks.

The public names live in the packages, each listing them in ``__all__``: ``node``
(``Node``, ``open_node``), ``config`` (``NodeConfig``), ``client`` (the API clients),
``identity``, ``wire``, ``gossip``, ``net``, ``api``, ``discovery``, ``mesh``,
``testing`` and ``cli``; and the small modules ``errors``, ``ids`` and ``ratelimit``.
Everything else is internal and may change.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["PROTOCOL_VERSION", "__version__"]

__version__ = "0.1.0"

#: Version of the node-to-node wire protocol. Nodes refuse peers of another version.
PROTOCOL_VERSION = 7


def _lazy(package: str, where: dict[str, tuple[str, ...]]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) for ``package``: each name of ``where[module]``
    is imported from that submodule on first use, so that importing the package (or a
    light submodule of it) does not load what only the others need (trio, zeroconf,
    X.509)."""
    modules = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{modules[name]}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
