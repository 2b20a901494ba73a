"""StreamOrder: each stream of an origin in interest mode put back in order by its
``tprev`` links (p2pnode/gossip/streams.py)."""

from __future__ import annotations

from p2pnode.gossip.streams import StreamOrder

A = (b"o" * 16, 1, "a")
B = (b"o" * 16, 1, "b")


def test_a_stream_goes_out_as_it_comes_when_its_links_hold() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    assert s.add(A, 1, 0, "a1", 0.0) == ["a1"]
    assert s.add(A, 4, 1, "a4", 0.0) == ["a4"]  # 2 and 3 were of other streams
    assert s.add(B, 2, 0, "b2", 0.0) == ["b2"]
    assert s.add(A, 9, 4, "a9", 0.0) == ["a9"]
    assert s.stats.held == 0


def test_a_missing_link_holds_what_follows_until_it_comes() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    s.add(A, 1, 0, "a1", 0.0)
    assert s.add(A, 7, 4, "a7", 0.1) == []  # waits for 4
    assert s.add(A, 9, 7, "a9", 0.2) == []
    assert s.next_deadline() == 1.1
    assert s.add(A, 4, 1, "a4", 0.3) == ["a4", "a7", "a9"]
    assert s.held_count == 0
    assert s.next_deadline() is None


def test_a_link_that_never_comes_is_given_up_after_the_hold() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    s.add(A, 1, 0, "a1", 0.0)
    s.add(A, 9, 7, "a9", 0.5)
    s.add(A, 7, 4, "a7", 0.6)
    assert s.tick(1.4) == []
    assert s.tick(1.5) == ["a7", "a9"]  # 4 given up: 7 and what follows it go out
    assert s.stats.gaps == 1
    assert s.add(A, 4, 1, "a4", 2.0) == ["a4"]  # late: out as it comes
    assert s.stats.late == 1


def test_the_first_batch_seen_starts_the_stream_and_zero_restarts_it() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    assert s.add(A, 50, 40, "a50", 0.0) == ["a50"]  # joined late: no wait for 40
    assert s.add(A, 60, 0, "a60", 0.0) == ["a60"]  # the origin forgot the stream
    assert s.add(A, 70, 60, "a70", 0.0) == ["a70"]


def test_bounds_release_rather_than_drop() -> None:
    s: StreamOrder[str] = StreamOrder(1.0, max_streams=2, max_held=3)
    s.add(A, 1, 0, "a1", 0.0)
    s.add(A, 5, 3, "a5", 0.0)  # held
    s.add(B, 2, 0, "b2", 0.0)
    out = s.add((b"p" * 16, 1, None), 1, 0, "c1", 0.0)  # a third stream: A is forgotten
    assert out == ["c1", "a5"]
    assert s.stats.forgotten == 1
    assert s.held_count == 0
    for seq in (10, 20, 30):
        assert s.add(B, seq + 1, seq, f"b{seq + 1}", 0.0) == []
    out = s.add(B, 41, 40, "b41", 0.0)  # a fourth held: B's first gap is given up
    assert out == ["b11"]
    assert s.held_count == 3


def test_a_new_subscription_waits_for_what_catch_up_brings_or_skips() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    assert s.add(A, 9, 7, "a9", 0.0, wait=True) == []  # 7 may be after the subscribe
    assert not s.started(A)
    assert s.add(A, 7, 0, "a7", 0.2) == ["a7", "a9"]  # caught up: in order
    assert s.started(A)
    assert s.add(B, 9, 7, "b9", 0.0, wait=True) == []
    assert s.skip(B, 7) == ["b9"]  # 7 came before the subscription: not delivered
    other = (b"p" * 16, 1, "a")
    assert s.add(other, 5, 3, "p5", 0.0, wait=True) == []
    assert s.tick(1.0) == ["p5"]  # nothing came: given up after the hold
    assert s.add(other, 8, 0, "p8", 2.0, wait=True) == ["p8"]  # tprev 0: no wait


def test_a_restarted_origins_new_stream_waits_for_its_start() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    s.add(A, 3, 0, "a3", 0.0)
    new_run = (A[0], 2, "a")
    assert s.add(new_run, 4, 2, "n4", 1.0) == []  # the origin restarted: 2 is missing
    assert s.add(new_run, 2, 0, "n2", 1.1) == ["n2", "n4"]
    assert s.add((b"q" * 16, 2, "a"), 4, 2, "q4", 1.0) == ["q4"]  # unknown origin: late join


def test_a_restarted_node_s_streams_go_on_from_its_store() -> None:
    s: StreamOrder[str] = StreamOrder(1.0)
    s.seed(A, 5)
    assert s.add(A, 9, 7, "a9", 0.0) == []  # 7 was published while the node was away
    assert s.add(A, 7, 5, "a7", 0.1) == ["a7", "a9"]
    assert s.add(B, 4, 2, "b4", 0.0) == ["b4"]  # not in the store: starts as usual
