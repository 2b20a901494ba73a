"""The addresses a node's member record announces: dialable ones, never a wildcard."""

from __future__ import annotations

import pytest

from p2pnode.node import membership


def test_a_specific_listen_address_is_announced_as_it_is() -> None:
    assert membership.record_addrs("10.1.2.3:7420") == ["10.1.2.3:7420"]
    assert membership.record_addrs("[fd00::5]:7420") == ["[fd00::5]:7420"]


def test_a_wildcard_becomes_the_interface_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    addrs = tuple(f"10.0.0.{k}" for k in range(1, 12))
    monkeypatch.setattr(membership, "suitable_ipv4_addresses", lambda: addrs)
    assert membership.record_addrs("0.0.0.0:7420") == [f"10.0.0.{k}:7420" for k in range(1, 9)]
    assert membership.record_addrs("[::]:7421")[0] == "10.0.0.1:7421"
    monkeypatch.setattr(membership, "suitable_ipv4_addresses", lambda: ())
    assert membership.record_addrs("0.0.0.0:7420") == ["0.0.0.0:7420"]  # nothing better
