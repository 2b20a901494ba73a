"""The member list for the clients, without I/O: the ``members`` and ``tags`` requests
(docs/api.md, "members" and "tags")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["members_request", "tags_request"]


def members_request(tags: Mapping[str, str] | None = None,
                    state: str | Iterable[str] | None = None,
                    watch: bool | None = None) -> dict[str, Any]:
    """A ``members`` request: the members with all of ``tags``, in ``state`` (one state or
    several); ``watch`` True: member events follow on the connection (False: no longer)."""
    req: dict[str, Any] = {"op": "members"}
    if tags:
        req["tag"] = dict(tags)
    if state is not None:
        req["state"] = state if isinstance(state, str) else list(state)
    if watch is not None:
        req["watch"] = watch
    return req


def tags_request(tags: Mapping[str, str] | None = None,
                 delete: Iterable[str] = ()) -> dict[str, Any]:
    """A ``tags`` request: set ``tags``, delete the keys ``delete``."""
    req: dict[str, Any] = {"op": "tags"}
    if tags:
        req["set"] = dict(tags)
    delete = list(delete)
    if delete:
        req["delete"] = delete
    return req
