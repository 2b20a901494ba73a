"""``simulate.py --topics``: the copies counted are the run's messages only (not a
publisher's own ``$mesh`` link lists), and ``copies_by_cause`` accounts for each of them
(scripts/simcauses.py)."""

from __future__ import annotations

from .test_simtopics import run_topics


def test_every_copy_has_a_cause_and_link_lists_are_not_message_copies() -> None:
    r, done = run_topics("--gossip", "interest", "--churn", "0.25")
    assert r["crashed"] == 3
    topics = {t for ts in done.stats.batch_topics.values() for t in ts}
    assert topics
    assert not any(t.startswith("$") for t in topics)  # publishers' link lists left out
    causes = r["copies_by_cause"]
    assert set(causes) <= {"tree", "off_tree", "fallback", "reroute", "graft", "fetch",
                           "passback"}
    received = r["copies_received"] - done.topics.local_copies
    counted = sum(copies for copies, _ in causes.values()) * r["messages"]
    assert abs(counted - received) < 0.01 * r["messages"]
    assert all(dups <= copies for copies, dups in causes.values())
