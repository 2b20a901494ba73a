"""What a node reports about itself: the ``status`` reply (its schema is
``p2pnode.api.status``) and the ``peers`` reply."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from .. import PROTOCOL_VERSION, __version__
from ..api.monitor import format_time
from ..api.status import (
    ApiStatus,
    GossipStatus,
    HandlersStatus,
    HistoryStatus,
    LinkFailure,
    LinksStatus,
    MdnsStatus,
    MembersStatus,
    MeshViewStatus,
    MessagesStatus,
    NodeStatus,
    RecentGap,
    RequestsStatus,
    RetainedStatus,
    SecurityStatus,
)
from ..api.status_interest import InterestStatus
from ..ids import id_to_hex

if TYPE_CHECKING:
    from ..api.session import ApiStats
    from ..net.failures import FailureRecord
    from .node import Node


def peers_info(node: Node) -> list[dict[str, Any]]:
    """The linked peers, for the ``peers`` request."""
    if node.links is None:
        return []
    now = trio.current_time()
    peers = []
    for link in node.links.links.values():
        failed = node.failures.last(addrs=(link.addr, link.listen), peer_id=link.peer_id)
        peers.append({
            "node_id": link.peer_hex, "name": link.peer.name, "addr": link.addr,
            "listen": link.listen, "direction": link.direction,
            "since_s": round(now - link.opened_at, 3),
            "rtt_ms": round(link.rtt * 1000, 3) if link.rtt is not None else None,
            "peer_links": link.peer_links, "static": link.static,
            "queued_bytes": len(link.out), "dropped": link.out.dropped,
            "last_failure": msgspec.to_builtins(_failure(failed)) if failed else None,
        })
    return peers


def _failure(rec: FailureRecord) -> LinkFailure:
    f = rec.failure
    return LinkFailure(
        addr=rec.addr, direction=rec.direction, reason=f.reason, message=f.message,
        time=format_time(rec.at), ago_s=round(max(0.0, time.time() - rec.at), 3),
        count=rec.count, peer_id=id_to_hex(rec.peer_id) if rec.peer_id else None,
        detail=f.detail)


def health_info(node: Node, min_links: int) -> tuple[bool, dict[str, Any]]:
    """Whether the node is healthy: it serves its socket (when it has one) and has at
    least ``min_links`` links. Returns (healthy, a JSON-able body that says why)."""
    links = len(node.links.links) if node.links is not None else 0
    problem = node.api.serving_problem() if node.api is not None else None
    if problem is None and links < min_links:
        problem = f"{links} links, fewer than --health-min-links {min_links}"
    body: dict[str, Any] = {"status": "ok" if problem is None else "unhealthy",
                            "node_id": node.node_hex, "links": links, "min_links": min_links}
    if problem is not None:
        body["reason"] = problem
    return problem is None, body


def status_info(node: Node) -> NodeStatus:
    """The node's state and counters, for the ``status`` request (schema:
    ``p2pnode.api.status``)."""
    return NodeStatus(
        node_id=node.node_hex, name=node.config.name, listen=node.listen_str,
        version=__version__, protocol=PROTOCOL_VERSION,
        uptime_s=round(trio.current_time() - node.started_at, 3),
        peers=len(node.links.links) if node.links else 0,
        socket=str(node.config.socket_path) if node.api else None,
        clients=len(node.api.sessions) if node.api else 0,
        messages=_messages(node), gossip=_gossip(node),
        mesh_view=MeshViewStatus(nodes=len(node.mesh.nodes), links=len(node.mesh.edges()),
                                 bad_lists=node.mesh.bad),
        history=_history(node), retained=_retained(node),
        links=_links(node) if node.links is not None else None,
        mdns=MdnsStatus(**node.discovery.stats) if node.discovery is not None else None,
        security=_security(node),
        api=_api(node.api.stats) if node.api is not None else None,
        requests=_requests(node), store=node.storing.status(), members=_members(node),
        handlers=HandlersStatus(**node.handlers.stats()), interest=_interest(node),
    )


def _interest(node: Node) -> InterestStatus | None:
    router = node.router
    if router.interest is None:
        return None
    streams, fetches = router.streams.stats, router.fetches.stats
    return InterestStatus(
        **dataclasses.asdict(router.interest.stats), streams=len(router.streams),
        stream_held=streams.held, stream_gaps=streams.gaps, stream_late=streams.late,
        fetch_asked=fetches.asked, fetch_retried=fetches.retried,
        fetch_asked_on=fetches.asked_on,
        fetch_answered=fetches.answered, fetch_refused=fetches.refused)


def _members(node: Node) -> MembersStatus:
    states = Counter(m.state for m in node.membership.members())
    table, glue = node.membership.table.stats, node.members_glue.stats
    detector = node.membership.detector
    mine = node.membership.me.interests
    return MembersStatus(
        alive=states["alive"], suspect=states["suspect"], dead=states["dead"],
        left=states["left"], records=table.records, claims=table.claims, stale=table.stale,
        refused=table.refused, bad=glue.bad, rate_limited=glue.rate_limited,
        refutations=node.membership.refutations, probes=detector.probes_sent,
        probes_cleared=detector.cleared, probes_skipped=glue.probes_skipped,
        bytes_sent=glue.bytes_sent, interests=-1 if mine is None else len(mine),
        records_paced=node.membership.record_pacer.held_total,
        interests_paced=node.membership.interest_gate.held)


def _messages(node: Node) -> MessagesStatus:
    rs = node.router.stats
    order = node.router.order.stats
    return MessagesStatus(
        published=node.published, received=rs.received, delivered=node.delivered,
        duplicates=rs.duplicates, forwarded=rs.forwarded, hop_limited=rs.hop_limited,
        rejected=rs.rejected, rate_limited=node.rate_limited,
        seen_cache=len(node.router.seen), order_held=order.held, order_gaps=order.gaps,
        order_late=order.late, order_stale=order.stale,
        recent_gaps=[RecentGap(id_to_hex(o), e, a, b) for o, e, a, b in order.recent_gaps],
    )


def _gossip(node: Node) -> GossipStatus:
    rs = node.router.stats
    return GossipStatus(
        mode=node.config.gossip, ihave_sent=rs.ihave_sent, ihave_received=rs.ihave_received,
        grafts_sent=rs.grafts_sent, grafts_received=rs.grafts_received,
        graft_misses=rs.graft_misses, prunes_sent=rs.prunes_sent,
        prunes_received=rs.prunes_received, swaps=rs.swaps, repaired=rs.repaired,
        missing_given_up=rs.missing_given_up,
    )


def _history(node: Node) -> HistoryStatus:
    history = node.router.history
    return HistoryStatus(batches=len(history), bytes=history.bytes, evicted=history.evicted,
                         max_bytes=history.max_bytes, max_age_s=history.max_age)


def _retained(node: Node) -> RetainedStatus:
    retaining = node.retaining
    store, sync = retaining.store, retaining.sync.stats
    store.expire(retaining.wall())
    return RetainedStatus(
        topics=store.values, tombstones=store.tombstones, bytes=store.bytes,
        max_topics=store.max_topics, max_bytes=store.max_bytes, accepted=store.stats.accepted,
        refused_full=store.stats.refused_full, refused_future=store.stats.refused_future,
        rejected=retaining.rejected + sync.rejected, synced=sync.received,
        sync_wanted=sync.wanted, sync_given_up=sync.given_up,
        sync_unsolicited=sync.unsolicited, sync_busy=retaining.wants_busy,
    )


def _links(node: Node) -> LinksStatus:
    assert node.links is not None
    ls = node.links.stats
    open_links = node.links.links.values()
    return LinksStatus(
        opened=ls.opened, closed=dict(ls.closed), dials=ls.dials,
        dials_failed=ls.dials_failed, queue_drops=ls.queue_drops, refused=dict(ls.refused),
        refused_by_peer=dict(ls.refused_by_peer), handshake_failed=dict(ls.handshake_failed),
        discovered_ignored=ls.discovered_ignored + node.discovered_ignored,
        pruned=ls.pruned,
        pings_lost=ls.pings_lost + sum(link.pings_lost for link in open_links),
        bytes_sent=ls.bytes_sent + sum(link.out.sent_bytes for link in open_links),
        bytes_received=ls.bytes_received + sum(link.bytes_received for link in open_links),
        failures=[_failure(rec) for rec in node.failures.recent(16)],
    )


def _security(node: Node) -> SecurityStatus:
    counters = node.transport.counters()
    return SecurityStatus(
        links="plaintext" if node.config.insecure else "tls1.3",
        network=node.network_tag,
        members_only=not node.network.is_open and not node.config.insecure,
        signed_batches=True,
        tls_handshakes=counters.handshakes, tls_failed=counters.failed,
        busy_refused=counters.busy, refused_per_ip=counters.refused_per_ip,
        rate_limited=node.rate_limited, rejected_batches=node.router.stats.rejected,
        new_origin_limited=node.router.stats.new_origin_limited,
        origins_tracked=node.router.order.tracked,
        origins_forgotten=node.router.order.stats.forgotten,
    )


def _api(stats: ApiStats) -> ApiStatus:
    return ApiStatus(
        requests=stats.requests, errors=stats.errors, events_dropped=stats.events_dropped,
        clients_refused=stats.clients_refused, clients_forbidden=stats.clients_forbidden,
        rate_limited=stats.rate_limited, replays=stats.replays, wills=stats.wills,
    )


def _requests(node: Node) -> RequestsStatus:
    rq = node.requests
    st = rq.stats
    dropped = dict(st.replies_dropped)
    too_large = node.api.requests.replies_dropped if node.api is not None else 0
    if too_large:
        dropped["too_large"] = too_large
    return RequestsStatus(
        asked=st.asked, delivered=st.delivered, replayed=st.replayed, bad=st.bad,
        waiting=rq.pending, paths=len(rq.paths), paths_evicted=rq.paths.evicted,
        replies_sent=st.replies_sent, replies_in=st.replies_in,
        replies_taken=st.replies_taken, replies_forwarded=st.replies_forwarded,
        replies_rejected=st.replies_rejected, replies_dropped=dropped,
    )
