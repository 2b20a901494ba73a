"""Peer exchange: the link manager's choice of dial candidates (when every link is to one subnet,
candidates in another subnet come first) and the addresses a member record gives
(docs/protocol.md, "Peer exchange")."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from p2pnode.config import NodeConfig
from p2pnode.net.manager import LinkManager, _Discovered, subnet
from p2pnode.wire.messages import Hello


def manager(links: list[str], candidates: dict[bytes, str]) -> LinkManager:
    cfg = NodeConfig(seed=1, mdns=False)
    mgr = LinkManager(cfg, Hello(6, b"\x00" * 16, "me", "10.0.0.1:7420"), transport=None,  # type: ignore[arg-type]
                      on_gossip=lambda _l, _m: None, on_link_change=lambda _l, _u: None)
    fake: dict[bytes, Any] = {bytes([i]) * 16: SimpleNamespace(addr=a) for i, a in enumerate(links)}
    mgr.links = fake
    for pid, addr in candidates.items():
        host, port = addr.rsplit(":", 1)
        mgr._discovered[pid] = _Discovered(((host, int(port)),), found_at=0.0)
    return mgr


def test_subnets() -> None:
    assert str(subnet("10.1.2.3:7420")) == "10.1.2.0/24"
    assert str(subnet("[fd00::1:2]:7420")) == "fd00::/64"
    assert subnet("mem:3") is None


def test_candidates_in_another_subnet_come_first_when_all_links_share_one() -> None:
    near = {bytes([100 + i]) * 16: f"10.0.0.{10 + i}:7420" for i in range(20)}
    far = {b"\xee" * 16: "10.0.1.5:7420"}
    mgr = manager(["10.0.0.2:7420", "10.0.0.3:40000"], {**near, **far})
    for _ in range(20):
        assert mgr._pick(list(near) + list(far), 1) == [b"\xee" * 16]
    # Links in two subnets already: a plain random choice.
    mgr = manager(["10.0.0.2:7420", "10.0.5.3:7420"], {**near, **far})
    picks = {mgr._pick(list(near) + list(far), 1)[0] for _ in range(40)}
    assert len(picks) > 1


def test_a_record_gives_addresses_others_can_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pnode.node.membership as glue

    monkeypatch.setattr(glue, "suitable_ipv4_addresses", lambda: ("10.1.2.3", "10.9.0.1"))
    assert glue.record_addrs("0.0.0.0:7420") == ["10.1.2.3:7420", "10.9.0.1:7420"]
    assert glue.record_addrs("192.168.5.5:7420") == ["192.168.5.5:7420"]
    assert glue.record_addrs("mem:3") == ["mem:3"]
    monkeypatch.setattr(glue, "suitable_ipv4_addresses", lambda: ())
    assert glue.record_addrs("0.0.0.0:7420") == ["0.0.0.0:7420"]
