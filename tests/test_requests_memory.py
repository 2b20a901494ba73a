"""Request/reply in the in-memory network, in virtual time: tokens that expire, forged
and flooded replies from a hand-driven peer, replayed requests, a node that links after
a request went out, a client that goes while its request waits."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from p2pnode.client import ApiReplyError, open_client
from p2pnode.gossip.replies import sign_reply
from p2pnode.gossip.signing import make_batch
from p2pnode.node import Node
from p2pnode.testing import (
    MemoryNetwork,
    make_identity,
    open_raw_link,
    wait_linked,
    wait_until,
)
from p2pnode.wire.messages import Item, Reply, encode_message
from p2pnode.wire.requests import REQUEST_TOPIC, ReplyBody, RequestBody, encode_request

from .test_history_node import start_api_node, start_node


class Sink:
    """Where a request's replies go (as the API's collector, without the API)."""

    def __init__(self, max_replies: int = 1) -> None:
        self.max_replies = max_replies
        self.replies: list[ReplyBody] = []
        self.finished = False

    def reply(self, body: ReplyBody) -> bool:
        self.replies.append(body)
        return len(self.replies) >= self.max_replies

    def done(self) -> None:
        self.finished = True


async def test_a_reply_after_the_timeout_is_refused_and_the_asker_got_none(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_api_node(nursery, autojump_clock, net, 0, 1, short_tmp / "a.sock")
            b = await start_node(nursery, net, 1, 2, peers=(("mem", 1),))
            c = await start_api_node(nursery, autojump_clock, net, 2, 3, short_tmp / "c.sock",
                                     peers=(("mem", 2),))
            await wait_linked([a, b, c], [(1, 0), (2, 1)])
            async with open_client(c.config.socket_path) as server, \
                    open_client(a.config.socket_path) as asker:
                await server.subscribe(["slow"])
                answers: list[list[dict[str, Any]]] = []

                async def ask() -> None:
                    answers.append(await asker.ask("slow", "?", timeout=1.0))

                nursery.start_soon(ask)
                event = await server.next_event()
                assert event["timeout"] == 1.0
                await wait_until(lambda: bool(answers))
                assert answers == [[]]
                await trio.sleep(0.1)  # the path at c lives as long, from when c got it
                with pytest.raises(ApiReplyError, match="its timeout passed") as info:
                    await server.request({"op": "reply", "reply_to": event["reply_to"],
                                          "data": "too late"})
                assert info.value.code == "request_gone"
            await wait_until(lambda: len(b.requests.paths) == 0)  # forgotten on the way too
            assert b.requests.stats.replies_in == 0
            nursery.cancel_scope.cancel()


async def test_forged_duplicate_and_flooded_replies_from_a_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    replier = make_identity(random.Random(50))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            hub = await start_node(nursery, net, 0, 1, peer_batches_per_s=100.0)
            got = Sink(max_replies=5)
            key = hub.requests.ask("t", b"q", 10.0, 5, got)
            stream = await open_raw_link(net, hub, replier.node_id, "replier")
            await wait_until(lambda: hub.requests.stats.asked == 1 and len(hub.links.links) == 1)
            body = ReplyBody(key[:16], key[16:], replier.node_id, "r", b"yes")
            good = sign_reply(replier, body)
            await stream.send_all(encode_message(good) * 2)  # the second is a duplicate
            await wait_until(lambda: len(got.replies) == 1)
            assert got.replies[0].data == b"yes"
            stats = hub.requests.stats
            await wait_until(lambda: stats.replies_dropped["duplicate"] == 1)
            # A flood of replies to nothing: dropped past the peer's rate, unchecked below it.
            junk = Reply(b"\x01" * 16, b"\x02" * 16, replier.node_id, 1, replier.public, b"",
                         b"\x00" * 64)
            await stream.send_all(encode_message(junk) * 1000)
            await wait_until(lambda: hub.rate_limited + stats.replies_dropped["unknown"] == 1000)
            assert hub.rate_limited >= 900
            assert stats.replies_rejected == 0  # unroutable: never worth a signature check
            assert len(hub.links.links) == 1  # a flood is dropped, not a reason to close
            await trio.sleep(1)  # the peer's rate refills
            # A forged reply to the waiting request costs the peer its link.
            forged = msgspec.structs.replace(
                sign_reply(replier, msgspec.structs.replace(body, replier=b"\x09" * 16)),
                replier=b"\x09" * 16)
            await stream.send_all(encode_message(forged))
            await wait_until(lambda: hub.links.stats.closed["bad_signature"] == 1)
            assert stats.replies_rejected == 1
            assert len(got.replies) == 1
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_replayed_request_is_not_delivered_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    origin = make_identity(random.Random(60))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            hub = await start_node(nursery, net, 0, 1, seen_ttl=5.0, history_age=5.0,
                                   link_timeout=60.0)
            delivered: list[str] = []
            hub.on_deliver.append(lambda msg: delivered.append(msg.topic))
            payload = encode_request(RequestBody("t", 60_000, 1, b"do it"))
            batch = make_batch(origin, b"\x10" * 16, None,
                               [Item(b"\x11" * 16, REQUEST_TOPIC, payload)], epoch=7)[0]
            frame = encode_message(msgspec.structs.replace(batch, hops=1))
            stream = await open_raw_link(net, hub, origin.node_id, "origin")
            await stream.send_all(frame)
            await wait_until(lambda: delivered == ["t"])
            await trio.sleep(10)  # the batch leaves the seen-cache
            hub.router.seen.expire(trio.current_time())
            assert batch.origin + batch.id not in hub.router.seen
            await stream.send_all(frame)
            await wait_until(lambda: hub.requests.stats.replayed == 1)
            assert delivered == ["t"]
            assert hub.requests.stats.delivered == 1
            # A request item in a numbered batch is not a request, nor a message.
            numbered = make_batch(origin, b"\x12" * 16, None,
                                  [Item(b"\x13" * 16, REQUEST_TOPIC, payload),
                                   Item(b"\x14" * 16, "u", b"plain")], epoch=7, seq=1)[0]
            await stream.send_all(encode_message(msgspec.structs.replace(numbered, hops=1)))
            await wait_until(lambda: delivered == ["t", "u"])
            assert hub.requests.stats.delivered == 1
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_request_does_not_reach_a_node_that_links_after_it_went_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Repair brings a late node the messages it missed, but not old requests."""
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, net, 0, 1)
            b = await start_node(nursery, net, 1, 2, peers=(("mem", 1),))
            await wait_linked([a, b], [(1, 0)])
            got: list[str] = []
            a.publish("news", b"missed")
            a.requests.ask("t", b"old question", 30.0, 1, Sink())
            await wait_until(lambda: b.requests.stats.delivered == 1)
            c = await start_node(nursery, net, 2, 3, peers=(("mem", 2),))
            c.on_deliver.append(lambda msg: got.append(msg.topic))
            await wait_linked([a, b, c], [(1, 0), (2, 1)])
            await wait_until(lambda: got == ["news"])  # repaired from b's history
            await trio.sleep(5)
            assert got == ["news"]
            assert c.requests.stats.delivered == 0
            nursery.cancel_scope.cancel()


async def test_a_client_that_goes_frees_its_waiting_requests(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_api_node(nursery, autojump_clock, net, 0, 1, short_tmp / "a.sock")
            assert a.api is not None
            stream = await trio.open_unix_socket(str(a.config.socket_path))
            async with stream:
                await stream.send_all(b'{"op":"request","topic":"x","data":"1","timeout":30}\n'
                                      b'{"op":"request","topic":"x","data":"2","timeout":30}\n')
                await wait_until(lambda: a.requests.pending == 2)
                assert a.api.requests.waiting == 2
            await wait_until(lambda: a.requests.pending == 0)  # its session ended
            assert a.api.requests.waiting == 0
            assert len(a.requests.paths) == 0
            nursery.cancel_scope.cancel()


async def test_limits_on_waiting_requests(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a = await start_api_node(nursery, autojump_clock, net, 0, 1, short_tmp / "a.sock",
                                     client_requests=2, max_requests=3)
            async with open_client(a.config.socket_path) as one, \
                    open_client(a.config.socket_path) as two, \
                    open_client(a.config.socket_path) as three:
                async with trio.open_nursery() as asks:
                    for client in (one, one, two):
                        asks.start_soon(partial(client.ask, "x", "1", timeout=30))
                    await wait_until(lambda: a.requests.pending == 3)
                    with pytest.raises(ApiReplyError, match="the node already has 3") as info:
                        await three.ask("x", "1")
                    assert info.value.code == "too_many_requests"
                    # A refusal is a reply like any other: it comes after the replies to
                    # this connection's earlier requests, here when their timeout passed.
                    start = trio.current_time()
                    with pytest.raises(ApiReplyError, match="connection already has 2") as info:
                        await one.ask("x", "1")
                    assert info.value.code == "too_many_requests"
                    assert trio.current_time() - start >= 29
            assert a.requests.pending == 0  # all three answered (empty) at their timeout
            nursery.cancel_scope.cancel()


async def test_the_node_answers_waiting_requests_when_it_stops(
    autojump_clock: trio.testing.MockClock, short_tmp: Path,
) -> None:
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a: Node = await start_api_node(nursery, autojump_clock, net, 0, 1,
                                           short_tmp / "a.sock")
            stream = await trio.open_unix_socket(str(a.config.socket_path))
            async with stream:
                await stream.send_all(b'{"op":"request","topic":"x","data":"1","timeout":30,'
                                      b'"id":1}\n{"op":"sync","id":2}\n')
                await wait_until(lambda: a.requests.pending == 1)
                await a.stop()
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            lines = data.splitlines()
            assert lines[0] == b'{"id":1,"ok":true,"replies":[]}'
            assert lines[1] == b'{"id":2,"ok":true}'
            assert b'"event":"closing"' in lines[2]
            nursery.cancel_scope.cancel()


async def test_a_node_of_protocol_4_and_this_one_refuse_each_other(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Version 5 added the Reply message and request items: a version 4 node would close
    the link on the first Reply, so the two do not link at all (docs/protocol.md)."""
    import p2pnode.node.node as node_module
    from p2pnode import PROTOCOL_VERSION

    assert PROTOCOL_VERSION >= 5
    net = MemoryNetwork()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            monkeypatch.setattr(node_module, "PROTOCOL_VERSION", 4)
            old = await start_node(nursery, net, 0, 1)
            monkeypatch.undo()
            new = await start_node(nursery, net, 1, 2, peers=(("mem", 1),))
            assert old.links is not None
            assert new.links is not None
            await wait_until(lambda: old.links.stats.refused["version_mismatch"] >= 1
                             and new.links.stats.refused["version_mismatch"] >= 1)
            assert not old.links.links
            assert not new.links.links
            nursery.cancel_scope.cancel()
