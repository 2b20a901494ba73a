"""``subscribe`` with ``seen`` (issue 17): per origin run, the last message id an app
got, so that a resumed subscription gets every message it has not seen, and none
twice, also after its node restarted and lost the moment before the crash.

Through the API of real nodes on loopback (the replay, the live filter and the checks),
and the restart itself on the in-memory network in virtual time, with the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.api.replaying import got_before
from p2pnode.client.resume import MAX_SEEN, ResumeState
from p2pnode.store.db import Row
from p2pnode.store.service import StoreService
from p2pnode.testing import MemoryNetwork, wait_linked, wait_until
from p2pnode.wire.messages import Gossip

from .test_client_pipeline import two_nodes
from .test_durable import connect
from .test_store_restart import Published, check_apps, publish_every, restart, run_async, start


def bump(msg_id: str, by: int) -> str:
    """The id ``by`` messages later in the same run."""
    return msg_id[:16] + f"{int(msg_id[16:], 16) + by:016x}"


async def test_seen_leaves_out_what_the_app_got_replayed_and_live(short_tmp: Path) -> None:
    """B's app resumes with ``since`` an early id of B and ``seen`` a later one of B's
    run: the replay starts after the later one. Live, B's messages up to a ``seen`` id
    beyond them are left out and A's come; once B's run passes it, B's come again."""
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b), connect(b) as app, \
                connect(b) as pub_b, connect(b) as app2, connect(a) as pub_a:
            ids = [(await pub_b.reply({"op": "publish", "topic": "t", "data": f"b{k}"}))
                   ["msg_id"] for k in range(8)]
            reply = await app.reply({"op": "subscribe", "topics": ["t"], "since": ids[1],
                                     "seen": [ids[5]]})
            assert reply["ok"], reply
            assert reply["replayed"] == 2
            assert [e["data"] for e in await app.messages(2)] == ["b6", "b7"]
            # Live: B's next two are "seen" (as after a crash that lost them), A's are not.
            step = int(ids[7][16:], 16) - int(ids[6][16:], 16)  # a message's share of ids
            reply = await app2.reply({"op": "subscribe", "topics": ["t"], "since": ids[7],
                                      "seen": [bump(ids[7], 2 * step)]})
            assert reply["ok"], reply
            assert reply["replayed"] == 0
            for k in range(8, 12):
                await pub_b.reply({"op": "publish", "topic": "t", "data": f"b{k}"})
                await pub_a.reply({"op": "publish", "topic": "t", "data": f"a{k}"})
            got = [e["data"] for e in await app2.messages(6)]
            assert sorted(got) == ["a10", "a11", "a8", "a9", "b10", "b11"]
            assert [d for d in got if d.startswith("b")] == ["b10", "b11"]
            # The first app had no live filter: it got all of them.
            assert len(await app.messages(8)) == 8


async def test_seen_leaves_out_a_peers_messages_delivered_a_batch_at_a_time(
        short_tmp: Path) -> None:
    """Messages from a peer reach apps a batch at a time (``deliver_items``): ``seen``
    keeps back those of its run up to the id given there too."""
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (a, b), connect(b) as app, connect(a) as pub_a:
            first = (await pub_a.reply({"op": "publish", "topic": "t", "data": "a0"}))["msg_id"]
            second = (await pub_a.reply({"op": "publish", "topic": "t", "data": "a1"}))["msg_id"]
            step = int(second[16:], 16) - int(first[16:], 16)
            reply = await app.reply({"op": "subscribe", "topics": ["t"], "since": second,
                                     "seen": [bump(second, 2 * step)]})
            assert reply["ok"], reply
            await pub_a.send({"op": "publish", "topic": "t", "data": "a2", "ack": False})
            await pub_a.send({"op": "publish", "topic": "t", "data": "a3", "ack": False})
            await pub_a.reply({"op": "publish", "topic": "t", "data": "a4"})  # one batch
            assert [e["data"] for e in await app.messages(1)] == ["a4"]


@pytest.mark.parametrize(("request_", "problem"), [
    ({"since": None, "seen": ["00" * 16]}, "seen goes with since"),
    ({"seen": ["xyz"]}, "seen holds message ids"),
    ({"seen": ["00" * 16] * 1025}, "at most 1024"),
    ({"seen": "00" * 16}, "seen"),
])
async def test_seen_is_checked_and_nothing_is_subscribed(
        short_tmp: Path, request_: dict[str, Any], problem: str) -> None:
    with trio.fail_after(20):
        async with two_nodes(short_tmp) as (_a, b), connect(b) as app:
            req = {"op": "subscribe", "topics": ["t"], "since": "11" * 16, "id": 3, **request_}
            if req["since"] is None:
                del req["since"]
            reply = await app.reply(req)
            assert reply["ok"] is False
            assert reply["error"]["code"] == "bad_request", reply
            assert problem in reply["error"]["message"]
            assert b.api is not None
            assert not any(s.topics for s in b.api.sessions)


def test_a_reconnecting_subscription_names_the_last_id_of_each_run() -> None:
    state = ResumeState(["t"], None)
    assert "seen" not in state.request()
    ids = [f"{run:016x}{k:016x}" for k in range(1, 4) for run in (7, 9)]
    for msg_id in ids:
        assert state.accept({"event": "message", "msg_id": msg_id})
    again = state.request()
    assert again["since"] == ids[-1]
    assert sorted(again["seen"]) == sorted(ids[-2:])
    for run in range(MAX_SEEN + 5):  # bounded: the runs heard from last
        state.accept({"event": "message", "msg_id": f"{run + 100:016x}{1:016x}"})
    seen = state.request()["seen"]
    assert len(seen) == MAX_SEEN
    assert f"{MAX_SEEN + 104:016x}{1:016x}" in seen
    json.dumps(seen)


@pytest.fixture
def inline_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StoreService, "inline", True)


async def test_after_a_crash_that_lost_the_apps_last_messages_it_resumes_exactly(
    autojump_clock: trio.testing.MockClock, short_tmp: Path, inline_store: None,
) -> None:
    """The soak's case: B hands messages to its app and writes them a moment later; B is
    killed before its last 10 batches are written (the last of them M, the app's last
    message). Back up, B gets fresh messages first, then the lost ones again by repair
    (M placed after the fresh ones). The app resumes 3 s later with ``since`` M and
    ``seen`` its last id of each run: it gets exactly what it had not got, each origin's
    in order: nothing lost, nothing twice."""
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            net = MemoryNetwork()
            a, b, c = await start(nursery, net, short_tmp, 3, [(1, 0), (1, 2), (0, 2)])
            await wait_linked([a, b, c], [(1, 0), (1, 2), (0, 2)])
            pub = Published()
            app: list[Gossip] = []
            b.on_deliver.append(app.append)
            await publish_every([a, c], pub, 20, 0.02)
            await wait_until(lambda: len(app) == 40)
            service = b.storing.service
            assert service is not None
            lost: list[Row] = []
            service.keep = lost.append  # type: ignore[method-assign]
            await publish_every([a, c], pub, 5, 0.02)
            delivered: set[bytes] = set()
            async with trio.open_nursery() as inner:
                inner.start_soon(publish_every, [a, c], pub, 60, 0.02)
                await trio.sleep(0.1)
                b = await restart(nursery, net, b, clean=False, down_for=0.3)
                b.on_deliver.append(lambda g: delivered.add(g.id))
            last = app[-1]  # what the app got before the kill, the last of it
            seen = {g.id[:8]: g.id for g in app}  # the app's last id of each run
            assert {r.first_id for r in lost} >= {last.id}, "M was written"
            await wait_until(lambda: pub.all() <= delivered | {g.id for g in app})
            await trio.sleep(3.0)  # a slow app
            assert lost
            assert b.storing.service is not None
            replay = b.open_replay(last.id, frozenset())
            got = [g for g in await run_async(replay) if not got_before(g.id, seen)]
            assert replay.found is True
            missed = pub.all() - {g.id for g in app}
            got_ids = [g.id for g in got]
            assert not missed - set(got_ids), f"lost {len(missed - set(got_ids))}"
            assert not set(got_ids) - missed, "got again what the app had"
            check_apps(got, pub)
            nursery.cancel_scope.cancel()
