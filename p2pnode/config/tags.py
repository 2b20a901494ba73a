"""A node's tags (``--tag KEY=VALUE``, the API's ``tags`` op): what it tells the mesh
about itself, such as ``role=display``. The rules here are the ones every layer checks:
the settings, the API, and the member records (docs/api.md, "members" and "tags").

- at most ``MAX_TAGS`` tags, ``MAX_TAGS_BYTES`` bytes of keys and values in all (a
  member record must stay small: it travels to every node);
- a key: 1-64 of ``A-Z a-z 0-9 _ . -``;
- a value: at most 256 characters of printable text (empty is allowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["MAX_KEY", "MAX_TAGS", "MAX_TAGS_BYTES", "MAX_VALUE", "changed_tags",
           "pairs_problem", "parse_tag", "tag_problem", "tags_problem"]

MAX_TAGS = 32
MAX_KEY = 64
MAX_VALUE = 256
#: The UTF-8 bytes of all keys and values together, at most.
MAX_TAGS_BYTES = 2048
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def tag_problem(key: object, value: object = "") -> str | None:
    """Why ``key``/``value`` is not a valid tag, or None."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        shown = repr(key[:80]) if isinstance(key, str) else repr(key)
        return (f"tag key {shown}: 1-{MAX_KEY} characters of A-Z, a-z, 0-9, '_', '.' "
                "and '-'")
    if not isinstance(value, str):
        return f"tag {key}: the value is text, not {type(value).__name__}"
    if len(value) > MAX_VALUE:
        return f"tag {key}: the value is {len(value)} characters, over {MAX_VALUE}"
    if not value.isprintable():
        return f"tag {key}: the value may not contain control characters (newlines, tabs)"
    return None


def tags_problem(tags: Mapping[str, str]) -> str | None:
    """Why ``tags`` is not a valid set of tags (each one, their number, their size),
    or None."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags, over the limit of {MAX_TAGS}"
    for key, value in tags.items():
        if problem := tag_problem(key, value):
            return problem
    size = sum(len(k) + len(v.encode("utf-8", "surrogatepass")) for k, v in tags.items())
    if size > MAX_TAGS_BYTES:
        return (f"the tags' keys and values take {size} bytes, over the limit of "
                f"{MAX_TAGS_BYTES}")
    return None


def pairs_problem(pairs: Iterable[tuple[str, str]]) -> str | None:
    """``tags_problem`` for (key, value) pairs, such as ``--tag`` flags give: also a key
    given twice."""
    pairs = list(pairs)
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        return f"tag {twice[0]} is given twice"
    return tags_problem(dict(pairs))


def changed_tags(tags: Mapping[str, str], set_: Mapping[str, str],
                 delete: Iterable[str]) -> dict[str, str]:
    """``tags`` after deleting the keys ``delete`` and setting ``set_`` (not checked)."""
    out = dict(tags)
    for key in delete:
        out.pop(key, None)
    out.update(set_)
    return out


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair (checked). Raises ``ValueError`` saying what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"tag {text[:80]!r}: expected KEY=VALUE, such as role=display")
    if problem := tag_problem(key, value):
        raise ValueError(problem)
    return key, value
