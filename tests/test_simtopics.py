"""``simulate.py --topics``: the subscriptions drawn, the figures over interested nodes
consistent with what the nodes themselves counted, ``--compare`` (scripts/simtopics.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .test_simulate import UNSTABLE, assert_refused, sim

SMALL = ("--nodes", "12", "--degree", "4", "--topics", "4", "--subscribe-fraction", "0.3",
         "--messages", "24", "--publishers", "3", "--seed", "5")


def run_topics(*argv: str) -> tuple[dict[str, Any], Any]:
    opts, _ = sim.parse_args([*SMALL, *argv])
    return sim.run_simulation(opts)


def test_tree_mode_delivers_each_message_to_every_subscriber_and_counts_every_copy() -> None:
    r, done = run_topics()
    topics, nodes = done.topics, done.nodes
    # The subscriptions are the nodes' own, through their API servers' subscribe.
    for i, node in enumerate(nodes):
        assert set(node.api._subs.by_topic) == topics.subs[i]
        assert node.api.wants("t0") == ("t0" in topics.subs[i])
    assert r["subscriptions"] == sum(len(s) for s in topics.subs) > 0
    # Who is interested in each message: its topic's subscribers, all running.
    interested = sum(sum(1 for s in topics.subs if t in s) for t in topics.message_topics)
    assert r["messages"] == 24
    assert r["possible_deliveries"] == interested
    assert r["deliveries"] == interested
    assert r["delivery_ratio"] == 1.0
    assert r["interested_per_message"] == round(interested / 24, 4)
    # Copies: what the routers received, plus the local copy of each interested origin.
    received = sum(node.router.stats.received for node in nodes)
    id_len = len(nodes[0].node_id)
    local = sum(1 for key, t in zip(done.stats.pub_order, topics.message_topics, strict=True)
                if t in topics.subs[done.index[key[:id_len]]])
    assert r["copies_received"] == received + local
    assert r["copies_per_message"] == round((received + local) / 24, 4)
    assert r["copies_per_delivery"] == round((received + local) / interested, 4)
    # Today every node receives everything: nodes without a matching subscription too.
    none = sum(node.router.stats.received for i, node in enumerate(nodes)
               if not topics.subs[i])
    assert r["nodes_without_subscription"] > 0
    assert r["copies_uninterested"] >= none > 0
    assert r["uninterested_copies_per_message"] == round(r["copies_uninterested"] / 24, 4)
    assert r["copies_received"] >= 12 * 24 * 0.9  # about one copy per node per message


def test_the_draw_is_the_seeds() -> None:
    draw = sim.simtopics.draw_subscriptions
    assert draw(12, 4, 0.3, 5) == draw(12, 4, 0.3, 5)
    assert draw(12, 4, 0.3, 5) != draw(12, 4, 0.3, 6)
    assert draw(3, 4, 0.0, 5) == [frozenset()] * 3
    assert draw(3, 2, 1.0, 5) == [frozenset({"t0", "t1"})] * 3
    a, _ = run_topics()
    b, _ = run_topics()
    for key in UNSTABLE:
        del a[key], b[key]
    assert a == b


def test_crashes_with_topics_keep_the_figures_consistent() -> None:
    r, done = run_topics("--churn", "0.25")
    assert r["crashed"] == 3
    down = [i for i, since in enumerate(done.up_since) if since is None]
    assert len(down) == 3
    subs = done.topics.subs
    everyone = sum(sum(1 for s in subs if t in s) for t in done.topics.message_topics)
    running = sum(sum(1 for i, s in enumerate(subs) if t in s and i not in down)
                  for t in done.topics.message_topics)
    # A crashed subscriber counts for none of the messages: the others' all count.
    assert running <= r["possible_deliveries"] <= everyone
    assert r["delivery_ratio"] == 1.0  # the trees repair around the dead
    assert r["deliveries"] == r["possible_deliveries"] > 0
    assert r["duplicate_deliveries"] == 0


def test_compare_runs_the_same_scenario_in_each_mode(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main([*SMALL, "--compare", "tree,flood", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["tree", "flood"]
    tree, flood = out["tree"], out["flood"]
    assert (tree["gossip"], flood["gossip"]) == ("tree", "flood")
    for key in ("possible_deliveries", "interested_per_message", "subscriptions", "links"):
        assert tree[key] == flood[key], key
    assert tree["delivery_ratio"] == flood["delivery_ratio"] == 1.0
    assert flood["copies_per_message"] > tree["copies_per_message"]
    assert sim.main([*SMALL, "--messages", "4", "--compare", "flood,tree"]) == 0
    text = capsys.readouterr().out
    assert "copies_per_message" in text
    assert text.splitlines()[3].split() == ["figure", "flood", "tree"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--subscribe-fraction", "0.5"], "--subscribe-fraction: only with --topics"),
    (["--topics", "-1"], "--topics -1: must be 0-4096"),
    (["--topics", "5", "--subscribe-fraction", "1.5"],
     "--subscribe-fraction 1.5: a probability, 0-1"),
    (["--compare", "tree"], "--compare tree: 2-4 different gossip modes"),
    (["--compare", "tree,tree"], "--compare tree,tree: 2-4 different gossip modes"),
    (["--compare", "tree,bogus"], "--compare bogus: gossip must be"),
    (["--gossip", "bogus"], "--gossip bogus: gossip must be"),
    (["--compare", "tree,flood", "--gossip", "tree"], "--compare runs each mode it names"),
    (["--topology", "join", "--topics", "3"], "--topics: not with --topology join"),
])
def test_impossible_topic_settings_are_refused(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(argv, message, capsys)


def test_interest_routing_reads_the_subscriptions() -> None:
    # The apps' subscriptions reach the router through the node's member record: with
    # --gossip interest the nodes that subscribed get each message, and few others do.
    tree, _ = run_topics()
    interest, _ = run_topics("--gossip", "interest")
    assert interest["possible_deliveries"] == tree["possible_deliveries"]
    assert interest["delivery_ratio"] == 1.0
    assert interest["uninterested_copies_per_message"] < \
        tree["uninterested_copies_per_message"] / 2
    assert interest["copies_per_message"] < tree["copies_per_message"] / 2
