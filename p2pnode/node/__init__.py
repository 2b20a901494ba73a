"""The node: ``Node`` wires the router, the links, the local API and discovery together
in one nursery; ``open_node`` runs one for the duration of an ``async with`` block."""

from .node import Node, open_node

__all__ = ["Node", "open_node"]
