"""The kinds of the ``status`` reply's fields and the helpers that declare them (see
``status``: what each kind and extra means)."""

from __future__ import annotations

import typing
from typing import Literal

import msgspec

Kind = Literal["counter", "gauge", "flag", "info", "by_reason", "list"]
Unit = Literal["bytes", "seconds"]
KINDS: tuple[Kind, ...] = typing.get_args(Kind)


def _meta(kind: Kind, description: str, **extra: str) -> msgspec.Meta:
    return msgspec.Meta(description=description, extra={"kind": kind, **extra})


def _counter(description: str, *, unit: Unit | None = None, drop: str | None = None,
             metric: str | None = None) -> msgspec.Meta:
    extra = {k: v for k, v in (("unit", unit), ("drop", drop), ("metric", metric)) if v}
    return _meta("counter", description, **extra)


def _gauge(description: str, *, unit: Unit | None = None) -> msgspec.Meta:
    return _meta("gauge", description, **({"unit": unit} if unit else {}))


def _by_reason(description: str, label: str, what: str) -> msgspec.Meta:
    return _meta("by_reason", description, label=label, drop=what)


def _flag(description: str) -> msgspec.Meta:
    return _meta("flag", description)


def _info(description: str) -> msgspec.Meta:
    return _meta("info", description)


def _section(description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description)


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A section of the reply (a JSON object)."""
