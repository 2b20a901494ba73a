"""The status schema (p2pnode/api/status.py): the one definition that the node fills, the
API encodes, docs/api.md describes, `p2pnode status` shows and /metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from p2pnode.api.status import NodeStatus, encode_status_reply
from p2pnode.api.status_fields import BY_PATH, FIELDS, SECTIONS, TOP_FIELDS, Field, kind_text
from p2pnode.discovery.mdns import _STAT_KEYS

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def value_for(field: Field, n: int) -> Any:
    """A plain JSON value of the field's kind (``n`` makes it distinct)."""
    if field.kind in ("counter", "gauge"):
        return n
    if field.kind == "flag":
        return n % 2 == 1
    if field.kind == "info":
        return n if field.path == "protocol" else f"text{n}"
    if field.kind == "by_reason":
        return {"why": n}
    assert field.kind == "list"
    if field.path == "links.failures":
        return [{"addr": "127.0.0.1:7001", "direction": "out", "reason": "connection_refused",
                 "message": "cannot link", "time": "2025-01-01T12:00:00.000Z", "ago_s": n,
                 "count": 2}]
    return [{"origin": "ab" * 16, "epoch": n, "from_seq": 2, "to_seq": 3}]


def full_reply(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reply (plain JSON) with every field of the schema, each set by ``values``
    (by path) or else to a distinct value of its kind."""
    values = values or {}
    reply: dict[str, Any] = {}
    for i, field in enumerate(FIELDS, start=1):
        value = values.get(field.path, value_for(field, i))
        if field.section is None:
            reply[field.name] = value
        else:
            reply.setdefault(field.section, {})[field.name] = value
    return reply


def full_status(values: dict[str, Any] | None = None) -> NodeStatus:
    """``full_reply`` as the typed struct the node builds."""
    return msgspec.convert(full_reply(values), NodeStatus)


def docs_table() -> list[tuple[str, str, str]]:
    """docs/api.md's table of the status fields: (field, kind, meaning) rows."""
    text = API_MD.read_text()
    section = text[text.index("### status\n"):text.index("### mesh\n")]
    start = section.index("| field | kind | meaning |")
    rows = []
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 3, line
        rows.append((cells[0].strip("`"), cells[1], cells[2]))
    return rows


def test_docs_describe_every_field_and_no_other() -> None:
    documented = {path: (kind, meaning) for path, kind, meaning in docs_table()}
    schema = {f.path: (kind_text(f), f.description) for f in FIELDS}
    missing = sorted(set(schema) - set(documented))
    extra = sorted(set(documented) - set(schema))
    hint = "print(p2pnode.api.status_fields.markdown_table()) shows the table the schema wants"
    assert not missing, f"status fields not in docs/api.md's table: {missing}; {hint}"
    assert not extra, f"docs/api.md describes fields the status schema lacks: {extra}; {hint}"
    for path, (kind, meaning) in schema.items():
        assert documented[path] == (kind, meaning), (
            f"docs/api.md's row for {path} differs from p2pnode/api/status.py; {hint}")
    assert [p for p, _, _ in docs_table()] == [f.path for f in FIELDS]


def test_docs_table_check_catches_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    # Control: a field added to the schema alone, or a row left in the docs alone, fails.
    fields = FIELDS
    added = Field("links", "new_counter", "counter", "a new counter")
    monkeypatch.setattr("tests.test_status_schema.FIELDS", (*fields, added))
    with pytest.raises(AssertionError, match=r"not in docs/api.md's table: \['links.new"):
        test_docs_describe_every_field_and_no_other()
    monkeypatch.setattr("tests.test_status_schema.FIELDS", fields[1:])
    with pytest.raises(AssertionError, match=r"the status schema lacks: \['node_id'\]"):
        test_docs_describe_every_field_and_no_other()


def test_the_docs_example_reply_has_the_schema() -> None:
    text = API_MD.read_text()
    section = text[text.index("### status\n"):text.index("### mesh\n")]
    example = re.search(r"```json\n(\{\n.*?\n\})\n```", section, re.S)
    assert example is not None
    reply = json.loads(example.group(1))
    assert (reply.pop("id"), reply.pop("ok")) == (1, True)
    status = msgspec.convert(reply, NodeStatus)  # no unknown field, none missing
    assert msgspec.to_builtins(status) == reply


def test_every_field_has_one_line_of_meaning_and_a_kind() -> None:
    assert len(BY_PATH) == len(FIELDS)
    for field in FIELDS:
        assert field.description, field.path
        assert "\n" not in field.description, field.path
        assert field.kind in ("counter", "gauge", "flag", "info", "by_reason", "list")
        assert (field.label is not None) == (field.kind == "by_reason"), field.path
        if field.name.endswith("_s"):
            assert field.unit == "seconds", field.path
        if "bytes" in field.name:
            assert field.unit == "bytes", field.path
    assert [s.name for s in SECTIONS if s.optional] == ["links", "mdns", "api", "interest"]
    assert TOP_FIELDS[0].path == "node_id"


def test_mdns_section_matches_the_discovery_counters() -> None:
    (mdns,) = (s for s in SECTIONS if s.name == "mdns")
    assert [f.name for f in mdns.fields] == list(_STAT_KEYS)


def test_reply_line_round_trip() -> None:
    status = full_status()
    line = encode_status_reply("x", status)
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    assert line.startswith(b'{"id":"x","ok":true,"node_id":')
    assert json.loads(line) == {"id": "x", "ok": True, **full_reply()}
    assert json.loads(encode_status_reply(None, status)) == {"ok": True, **full_reply()}


def test_sections_a_node_does_not_run_are_left_out() -> None:
    reply = full_reply({"messages.recent_gaps": [], "socket": None})
    for name in ("links", "mdns", "api"):
        del reply[name]
    status = msgspec.convert(reply, NodeStatus)
    assert status.links is None
    got = json.loads(encode_status_reply(1, status))
    assert not {"links", "mdns", "api"} & set(got)
    assert "recent_gaps" not in got["messages"]  # only when there were gaps
    assert got["socket"] is None
    assert got["messages"]["published"] == reply["messages"]["published"]
