"""The ``status`` schema (``p2pnode.api.status``) read as a list of fields: each one's
path, kind, unit and description, for ``p2pnode status``, ``/metrics`` and the table
in docs/api.md (``markdown_table``)."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

import msgspec

from .status import NodeStatus
from .status_base import KINDS, Kind, Section, Unit


@dataclass(frozen=True)
class Field:
    """One field of the reply, as the schema describes it."""

    section: str | None  # None: at the top level
    name: str
    kind: Kind
    description: str
    unit: Unit | None = None
    label: str | None = None  # by_reason: the label name of its keys in /metrics
    drop: str | None = None  # the text of ``p2pnode status`` under ``drops``
    metric: str | None = None  # the base of its metric name, when not the field's name

    @property
    def path(self) -> str:
        """``messages.delivered``, or ``uptime_s`` at the top level."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def help(self) -> str:
        """The description without markdown: for ``# HELP``. A link alone in
        parentheses, or after a comma, goes; another keeps its text."""
        text = re.sub(r" ?\(\[[^\]]*\]\([^)]*\)\)|, \[[^\]]*\]\([^)]*\)", "",
                      self.description)
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        return text.replace("`", "")


@dataclass(frozen=True)
class SectionInfo:
    name: str
    description: str
    optional: bool  # absent from the reply when the node does not run it
    fields: tuple[Field, ...]


def _annotation(tp: Any) -> tuple[Any, msgspec.Meta | None, bool]:
    """The type inside ``Annotated``, its Meta, and whether it may be None (then the
    type returned is the one that is not None)."""
    meta = None
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        meta = next((m for m in extras if isinstance(m, msgspec.Meta)), None)
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            return next(a for a in args if a is not type(None)), meta, True
    return tp, meta, False


def _field(section: str | None, name: str, meta: msgspec.Meta | None) -> Field:
    where = f"{section}.{name}" if section else name
    if meta is None or not meta.description or not meta.extra:
        raise TypeError(f"status field {where} has no description or kind")
    extra = dict(meta.extra)
    kind = extra.pop("kind")
    if kind not in KINDS:
        raise TypeError(f"status field {where}: unknown kind {kind!r}")
    return Field(section, name, kind, meta.description, **extra)


def _walk() -> tuple[tuple[Field, ...], tuple[SectionInfo, ...]]:
    top: list[Field] = []
    sections: list[SectionInfo] = []
    hints = typing.get_type_hints(NodeStatus, include_extras=True)
    for name in NodeStatus.__struct_fields__:
        tp, meta, optional = _annotation(hints[name])
        if isinstance(tp, type) and issubclass(tp, Section):
            inner = typing.get_type_hints(tp, include_extras=True)
            fields = tuple(_field(name, sub, _annotation(inner[sub])[1])
                           for sub in tp.__struct_fields__)
            description = meta.description if meta and meta.description else ""
            sections.append(SectionInfo(name, description, optional, fields))
        else:
            top.append(_field(None, name, meta))
    return tuple(top), tuple(sections)


#: The top-level fields that are not sections, and the sections, in reply order.
TOP_FIELDS, SECTIONS = _walk()
#: Every field of the reply, in reply order (sections' fields after the top level's).
FIELDS: tuple[Field, ...] = TOP_FIELDS + tuple(f for s in SECTIONS for f in s.fields)
#: Fields by path (``messages.delivered``).
BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}
SECTION_NAMES = frozenset(s.name for s in SECTIONS)


def kind_text(field: Field) -> str:
    """The kind as docs/api.md's table writes it: ``counter``, ``gauge, bytes``,
    ``counters by code``..."""
    text = f"counters by {field.label}" if field.kind == "by_reason" else field.kind
    return f"{text}, {field.unit}" if field.unit else text


def markdown_table() -> str:
    """docs/api.md's table of the status fields, as the schema has it (print it to
    update the docs after a change to the schema)."""
    rows = ["| field | kind | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{f.path}` | {kind_text(f)} | {f.description} |" for f in FIELDS]
    return "\n".join(rows)
