"""Small text helpers of the client commands: plurals, tables, one-line fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import P2PError


def plural(count: float, noun: str, plural_form: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``0 messages`` (``plural_form`` for irregular
    nouns: ``plural(n, "copy", "copies")``)."""
    word = noun if count == 1 else (plural_form or noun + "s")
    return f"{count:g} {word}" if isinstance(count, float) else f"{count} {word}"


def table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows (the first is the header) as lines of left-aligned columns, two spaces
    apart, without trailing spaces."""
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


#: Characters a one-line field shows escaped: backslash, tab, newline, carriage
#: return and the other control characters, and the bytes that were not UTF-8
#: (decoded with ``surrogateescape``, as U+DC80-U+DCFF).
_ESCAPES = {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
_ESCAPES.update({c: f"\\x{c:02x}" for c in (*range(32), 127) if c not in _ESCAPES})
_ESCAPES.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})


def one_line(text: str) -> str:
    """``text`` on one line without tabs: ``\\`` as ``\\\\``, tab as ``\\t``, newline
    as ``\\n``, carriage return as ``\\r``, other control characters, and bytes that
    were not UTF-8 (``surrogateescape``), as ``\\xNN``."""
    out = text.translate(_ESCAPES)
    if out.isascii():
        return out
    return out.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates


def check_count(count: int | None) -> None:
    """``--count``: None, or at least 1. Raises ``P2PError``."""
    if count is not None and count < 1:
        raise P2PError("--count must be at least 1")
