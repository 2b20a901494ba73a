"""What a node reports about itself: the ``status`` and ``peers`` replies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .. import PROTOCOL_VERSION, __version__
from ..ids import id_to_hex
from ..net.tls import TlsTransport

if TYPE_CHECKING:
    from .node import Node


def peers_info(node: Node) -> list[dict[str, Any]]:
    """The linked peers, for the ``peers`` request."""
    if node.links is None:
        return []
    now = trio.current_time()
    return [
        {
            "node_id": link.peer_hex, "name": link.peer.name, "addr": link.addr,
            "listen": link.peer.listen, "direction": link.direction,
            "since_s": round(now - link.opened_at, 3),
            "rtt_ms": round(link.rtt * 1000, 3) if link.rtt is not None else None,
            "peer_links": link.peer_links, "static": link.static,
            "queued_bytes": len(link.out), "dropped": link.out.dropped,
        }
        for link in node.links.links.values()
    ]


def status_info(node: Node) -> dict[str, Any]:
    """The node's state and counters, for the ``status`` request."""
    rs = node.router.stats
    order = node.router.order.stats
    history = node.router.history
    info: dict[str, Any] = {
        "node_id": node.node_hex, "name": node.config.name, "listen": node.listen_str,
        "version": __version__, "protocol": PROTOCOL_VERSION,
        "uptime_s": round(trio.current_time() - node._started_at, 3),
        "peers": len(node.links.links) if node.links else 0,
        "socket": str(node.config.socket_path) if node.api else None,
        "clients": len(node.api.sessions) if node.api else 0,
        "messages": {
            "published": node.published, "received": rs.received,
            "delivered": node.delivered, "duplicates": rs.duplicates,
            "forwarded": rs.forwarded, "hop_limited": rs.hop_limited,
            "rejected": rs.rejected, "rate_limited": node.rate_limited,
            "seen_cache": len(node.router.seen),
            "order_held": order.held, "order_gaps": order.gaps, "order_late": order.late,
            "order_stale": order.stale,
        },
        "gossip": {
            "mode": node.config.gossip, "ihave_sent": rs.ihave_sent,
            "ihave_received": rs.ihave_received, "grafts_sent": rs.grafts_sent,
            "grafts_received": rs.grafts_received, "graft_misses": rs.graft_misses,
            "prunes_sent": rs.prunes_sent, "prunes_received": rs.prunes_received,
            "swaps": rs.swaps, "repaired": rs.repaired,
            "missing_given_up": rs.missing_given_up,
        },
        "mesh_view": {"nodes": len(node.mesh.nodes), "links": len(node.mesh.edges()),
                      "bad_lists": node.mesh.bad},
        "history": {
            "batches": len(history), "bytes": history.bytes, "evicted": history.evicted,
            "max_bytes": history.max_bytes, "max_age_s": history.max_age,
        },
    }
    if order.recent_gaps:
        info["messages"]["recent_gaps"] = [
            {"origin": id_to_hex(o), "epoch": e, "from_seq": a, "to_seq": b}
            for o, e, a, b in order.recent_gaps]
    if node.links is not None:
        ls = node.links.stats
        info["links"] = {
            "opened": ls.opened, "closed": dict(ls.closed), "dials": ls.dials,
            "dials_failed": ls.dials_failed, "queue_drops": ls.queue_drops,
            "refused": dict(ls.refused), "refused_by_peer": dict(ls.refused_by_peer),
            "handshake_failed": dict(ls.handshake_failed),
            "discovered_ignored": ls.discovered_ignored + node.discovered_ignored,
            "pruned": ls.pruned,
            "pings_lost": ls.pings_lost + sum(
                link.pings_lost for link in node.links.links.values()),
            "bytes_sent": ls.bytes_sent + sum(
                link.out.sent_bytes for link in node.links.links.values()),
            "bytes_received": ls.bytes_received + sum(
                link.bytes_received for link in node.links.links.values()),
        }
    if node.discovery is not None:
        info["mdns"] = dict(node.discovery.stats)
    transport = node.transport
    info["security"] = {
        "links": "plaintext" if node.config.insecure else "tls1.3",
        "network": node.network_tag,
        "members_only": not node.network.is_open and not node.config.insecure,
        "signed_batches": True,
        "tls_handshakes": transport.stats.handshakes if isinstance(
            transport, TlsTransport) else 0,
        "tls_failed": transport.stats.failed if isinstance(transport, TlsTransport) else 0,
        "busy_refused": transport.stats.busy if isinstance(transport, TlsTransport) else 0,
        "refused_per_ip": getattr(getattr(transport, "tcp", transport), "refused_per_ip", 0),
        "rate_limited": node.rate_limited, "rejected_batches": node.router.stats.rejected,
        "new_origin_limited": node.router.stats.new_origin_limited,
        "origins_tracked": node.router.order.tracked,
        "origins_forgotten": node.router.order.stats.forgotten,
    }
    if node.api is not None:
        info["api"] = {
            "requests": node.api.stats.requests, "errors": node.api.stats.errors,
            "events_dropped": node.api.stats.events_dropped,
            "clients_refused": node.api.stats.clients_refused,
            "clients_forbidden": node.api.stats.clients_forbidden,
            "rate_limited": node.api.stats.rate_limited, "replays": node.api.stats.replays,
        }
    return info
