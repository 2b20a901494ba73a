"""The requests of the member list (docs/api.md, "members" and "tags"), as the other
requests are in ``protocol`` (which takes them into its ``Request`` union). No I/O;
the server's side is ``members``."""

from __future__ import annotations

import msgspec

__all__ = ["MembersOp", "TagsOp"]


class MembersOp(msgspec.Struct, tag="members", tag_field="op", kw_only=True,
                forbid_unknown_fields=True):
    """List the members of the mesh, this node included: those with all of ``tag``
    (key: value) and in one of the states ``state`` (a state, or a list). With
    ``watch`` true, this connection then gets a ``member_*`` event for every change
    (false: no longer)."""

    id: str | int | float | bool | None = None
    tag: dict[str, str] | None = None
    state: str | list[str] | None = None
    watch: bool | None = None


class TagsOp(msgspec.Struct, tag="tags", tag_field="op", kw_only=True,
             forbid_unknown_fields=True):
    """Change this node's tags: delete the keys ``delete``, set ``set``. Answered with
    the tags as they are then (without either: as they are)."""

    id: str | int | float | bool | None = None
    set: dict[str, str] | None = None
    delete: list[str] | None = None
