"""Helpers for tests and simulations: an in-memory network (``memory``) over simulated
links with latency and loss (``simnet``), topologies, waiting in virtual time, and
signatures checked once per process (``sigshare``)."""

from .memory import (
    MemoryNetwork,
    MemoryTransport,
    count_deliveries,
    line_edges,
    link_count,
    make_identity,
    memory_config,
    open_raw_link,
    random_connected_edges,
    random_regular_edges,
    ring_edges,
    start_memory_mesh,
    wait_linked,
    wait_topology,
    wait_until,
)
from .sigshare import share_signature_checks
from .simnet import SimNet

__all__ = ["MemoryNetwork", "MemoryTransport", "SimNet", "count_deliveries", "line_edges",
           "link_count", "make_identity", "memory_config", "open_raw_link",
           "random_connected_edges", "random_regular_edges", "ring_edges",
           "share_signature_checks", "start_memory_mesh", "wait_linked", "wait_topology",
           "wait_until"]
