"""Gossip logic without I/O: the seen-cache and the router. Driven by the caller's clock."""
