"""The ``status`` reply's schema: one msgspec Struct per section, without I/O.

Each field carries its meaning (``description``: one line, the text docs/api.md shows
in its field table) and, in ``extra``:

- ``kind``: ``counter`` (a number that only goes up), ``gauge`` (goes up and down),
  ``flag`` (true or false), ``info`` (text, or a version number: a label),
  ``by_reason`` (counters by reason or code, a JSON object), ``list`` (records, not
  a number);
- ``unit``: ``bytes`` or ``seconds``, where the field has one;
- ``label``: for ``by_reason``, the label name its keys take in /metrics;
- ``drop``: for a counter of something lost or refused, the short text
  ``p2pnode status`` shows under ``drops``.

The node builds a ``NodeStatus`` (``p2pnode.node.status``), the API server encodes
it, ``p2pnode.cli.statusview`` and ``p2pnode.cli.metrics`` walk ``FIELDS``
(``p2pnode.api.status_fields``: the schema read as a list of fields). A client
may talk to a node of another version: it reads replies as plain JSON objects and
treats fields missing from ``FIELDS`` as unknown, never as errors.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .protocol import Scalar
from .status_base import (
    Section,
    _by_reason,
    _counter,
    _flag,
    _gauge,
    _info,
    _meta,
    _section,
)
from .status_interest import InterestStatus

# The field kinds and their helpers live in ``status_base`` (shared with the sections
# kept in other modules: ``status_interest``).


class RecentGap(msgspec.Struct, forbid_unknown_fields=True):
    """Sequence numbers of one origin run given up (never came within ``order_hold``)."""

    origin: str
    epoch: int
    from_seq: int
    to_seq: int


class LinkFailure(msgspec.Struct, kw_only=True, omit_defaults=True,
                  forbid_unknown_fields=True):
    """The last failure to link with one address (a dialled ``HOST:PORT``, or the host
    of inbound connections)."""

    addr: str
    direction: str  # "out": this node dialled; "in": the peer did
    reason: str  # a short code (docs/operations.md, "Link failures")
    message: str  # what happened and what to do
    time: str  # when, UTC, ISO 8601
    ago_s: float  # how long ago, in seconds
    count: int  # failures in a row (since the last link with that address)
    peer_id: str | None = None
    detail: str = ""  # the library's own text (OpenSSL's, the system's)


_BY_CODE = " by [code](protocol.md#refusal-codes)"


class MessagesStatus(Section, omit_defaults=True):
    published: Annotated[int, _counter("messages published by local apps")]
    received: Annotated[int, _counter("batches received from peers, copies included")]
    delivered: Annotated[int, _counter(
        "messages handed to local delivery: the ones published here (except direct messages"
        " to other nodes) and the ones received for this node, once each, whether or not an"
        " app subscribes to their topic")]
    duplicates: Annotated[int, _counter(
        "received batch copies dropped because the node had already seen them (or had"
        " published them itself)")]
    forwarded: Annotated[int, _counter(
        "batch copies sent or queued to peers, one per peer (batches published here"
        " included)")]
    hop_limited: Annotated[int, _counter(
        "new batches not forwarded (or, past the limit, not delivered) because of the hop"
        " limit", drop="batches stopped by the hop limit")]
    rejected: Annotated[int, _counter(
        "batches dropped because their signature, key or contents were bad"
        " ([protocol.md](protocol.md#signed-batches))",
        drop="batches rejected: bad signature, key or contents")]
    rate_limited: Annotated[int, _counter(
        "batches dropped because a peer sent more than its rate limit",
        drop="batches dropped: a peer sent over its rate limit")]
    seen_cache: Annotated[int, _gauge("batches in the seen-cache now")]
    order_held: Annotated[int, _counter(
        "batches held back until an earlier batch of their origin came"
        " ([protocol.md](protocol.md#per-origin-order))")]
    order_gaps: Annotated[int, _counter(
        "messages given up as gaps: they did not come within `--order-hold` (1 s;"
        " longer while a repair is under way: [Events](#events))",
        drop="messages never came: order gaps skipped after --order-hold")]
    order_late: Annotated[int, _counter(
        "batches of a given-up gap that came later (delivered out of order)")]
    order_stale: Annotated[int, _counter(
        "batches dropped as replays of batches already handed out")]
    recent_gaps: Annotated[list[RecentGap], _meta(
        "list", "only when there were gaps: the last 16, each `{\"origin\", \"epoch\","
        " \"from_seq\", \"to_seq\"}`")] = msgspec.field(default_factory=list)


class GossipStatus(Section):
    mode: Annotated[str, _info("`tree` (Plumtree), `flood` or `interest` (`--gossip`)")]
    ihave_sent: Annotated[int, _counter("batch announcements (IHave) sent to lazy peers")]
    ihave_received: Annotated[int, _counter("batch announcements received")]
    grafts_sent: Annotated[int, _counter(
        "batches asked for (Graft) after an announcement alone")]
    grafts_received: Annotated[int, _counter("Grafts received")]
    graft_misses: Annotated[int, _counter(
        "Grafts received for batches no longer in history")]
    prunes_sent: Annotated[int, _counter("Prunes sent (a link made lazy for an origin)")]
    prunes_received: Annotated[int, _counter("Prunes received")]
    swaps: Annotated[int, _counter("tree links swapped for a shorter path")]
    repaired: Annotated[int, _counter(
        "batches announced to a peer whose digest lacked them")]
    missing_given_up: Annotated[int, _counter(
        "announced batches never obtained: every announcer was asked",
        drop="announced batches never obtained from any announcer")]


class MeshViewStatus(Section):
    nodes: Annotated[int, _gauge("nodes in this node's view of the mesh (`p2pnode mesh`)")]
    links: Annotated[int, _gauge("links in the view, each counted once")]
    bad_lists: Annotated[int, _counter("link lists that did not decode (ignored)",
                                       drop="mesh link lists ignored: they did not decode")]


class HistoryStatus(Section):
    batches: Annotated[int, _gauge("batches in history now")]
    bytes: Annotated[int, _gauge(
        "size of history now (bodies plus 200 bytes per batch)", unit="bytes")]
    evicted: Annotated[int, _counter(
        "batches pushed out of history before their age by its size limits",
        drop="batches left history early (its size limits)")]
    max_bytes: Annotated[int, _gauge("the size limit of history (`history_bytes`)",
                                     unit="bytes")]
    max_age_s: Annotated[float, _gauge("the age limit of history (`history_age`)",
                                       unit="seconds")]


class RetainedStatus(Section):
    topics: Annotated[int, _gauge("topics with a retained message now")]
    tombstones: Annotated[int, _gauge(
        "cleared topics remembered now (for `retained_tombstone_age`, a day)")]
    bytes: Annotated[int, _gauge(
        "size of the retained set now: the batches that carry it, plus 200 bytes per batch"
        " and per topic", unit="bytes")]
    max_topics: Annotated[int, _gauge(
        "the most topics kept, tombstones included (`--retained-max-topics`)")]
    max_bytes: Annotated[int, _gauge("the size limit (`--retained-max-bytes`)", unit="bytes")]
    accepted: Annotated[int, _counter(
        "retained messages kept: a new topic, or newer than the one held")]
    refused_full: Annotated[int, _counter(
        "retained messages not kept: no room within the limits (tombstones give way first)",
        drop="retained messages not kept: the retained set is full")]
    refused_future: Annotated[int, _counter(
        "retained messages not kept: stamped more than `retained_max_skew` (60 s) ahead of"
        " this node's clock", drop="retained messages not kept: stamped in the future")]
    rejected: Annotated[int, _counter(
        "retained batches not kept: a bad signature or body",
        drop="retained batches rejected: bad signature or body")]
    synced: Annotated[int, _counter(
        "retained messages kept from peers' answers in the sync when links open")]
    sync_wanted: Annotated[int, _counter("topics asked of peers in the sync")]
    sync_given_up: Annotated[int, _counter(
        "topics asked of every peer that had them, in vain",
        drop="retained topics never obtained from any peer")]
    sync_unsolicited: Annotated[int, _counter(
        "batches a peer sent in the sync that it was not asked for (dropped)",
        drop="retained batches dropped: not asked for")]
    sync_busy: Annotated[int, _counter(
        "peers' requests in the sync not answered: that link's queue was over half full",
        drop="retained sync requests not answered: a busy link")]


class LinksStatus(Section):
    opened: Annotated[int, _counter("links opened since start")]
    closed: Annotated[dict[str, int], _by_reason(
        "links closed, by reason, e.g. `{\"peer_left\": 1, \"timeout\": 2}` (reasons in"
        " [protocol.md](protocol.md#link-close-reasons))", "reason", "links closed")]
    dials: Annotated[int, _counter("outgoing connection attempts")]
    dials_failed: Annotated[int, _counter(
        "attempts that did not get a connection: connection refused, unreachable, no answer"
        " within `dial_timeout` (5 s), or a failed TLS handshake (for example a node of"
        " another network)", drop="dials failed (peer down or unreachable)")]
    queue_drops: Annotated[int, _counter(
        "batch copies dropped because a peer's send queue was full",
        drop="batch copies dropped: a peer's send queue was full")]
    refused: Annotated[dict[str, int], _by_reason(
        "connections this node refused," + _BY_CODE + "; `busy` counts inbound connections"
        " closed because `max_pending_handshakes` were already in their link handshake",
        "code", "links refused here")]
    refused_by_peer: Annotated[dict[str, int], _by_reason(
        "connections peers refused, by code", "code", "links refused by peers")]
    handshake_failed: Annotated[dict[str, int], _by_reason(
        "link handshakes that failed with a timeout or a protocol error, by code", "code",
        "link handshakes failed")]
    discovered_ignored: Annotated[int, _counter(
        "nodes found by mDNS and ignored (another protocol version or network, or over the"
        " limit of tracked nodes)",
        drop="discovered nodes ignored (other version or network)")]
    pruned: Annotated[int, _counter(
        "links this node closed because it had more than it wanted",
        drop="links pruned (more links than wanted)")]
    pings_lost: Annotated[int, _counter(
        "keepalive pings not answered before the next one was sent",
        drop="keepalive pings lost")]
    bytes_sent: Annotated[int, _counter(
        "bytes of frames sent on links after their handshake (before TLS encryption)",
        unit="bytes",
        metric="sent_bytes")]
    bytes_received: Annotated[int, _counter(
        "bytes of frames received on links after their handshake (after TLS decryption)",
        unit="bytes",
        metric="received_bytes")]
    failures: Annotated[list[LinkFailure], _meta(
        "list", "the last failure to link per address, newest first (at most 16), each"
        " `{\"addr\", \"direction\", \"reason\", \"message\", \"time\", \"ago_s\","
        " \"count\", \"peer_id\", \"detail\"}`"
        " ([operations.md](operations.md#link-failures))")] = msgspec.field(
        default_factory=list)


class MdnsStatus(Section):
    events: Annotated[int, _counter(
        "service events (added, updated, removed) taken from zeroconf's browser")]
    dropped_full: Annotated[int, _counter(
        "events dropped because the event channel was full (the name is resolved again"
        " once it drains)", drop="mDNS events dropped: too many at once (resolved later)")]
    dropped_closed: Annotated[int, _counter(
        "events dropped because discovery was stopping")]
    dropped_finished: Annotated[int, _counter(
        "events dropped because the node had stopped")]
    handoff_errors: Annotated[int, _counter(
        "events lost to an unexpected error on their way from zeroconf's thread",
        drop="mDNS events lost to an unexpected error (a bug)")]
    resolved: Annotated[int, _counter("services resolved to a valid record")]
    resolve_failed: Annotated[int, _counter("services that did not resolve in time",
                                            drop="mDNS services not resolved in time")]
    bad_record: Annotated[int, _counter(
        "services with an invalid record (ignored, [discovery.md](discovery.md))",
        drop="mDNS records invalid (ignored)")]
    self: Annotated[int, _counter("events and records of this node's own service")]
    found: Annotated[int, _counter("nodes reported found")]
    lost: Annotated[int, _counter("nodes reported lost")]
    too_many: Annotated[int, _counter(
        "services ignored because 1,024 were already tracked",
        drop="mDNS services ignored: too many tracked")]


class SecurityStatus(Section):
    links: Annotated[str, _info("`tls1.3`, or `plaintext` with `--insecure`")]
    network: Annotated[str, _info(
        "the network tag: `open`, or 16 hex digits derived from `--network-key`")]
    members_only: Annotated[bool, _flag(
        "true when only holders of the network key can link (a `--network-key` and no"
        " `--insecure`)")]
    signed_batches: Annotated[bool, _flag("always true: every batch is signed and checked")]
    tls_handshakes: Annotated[int, _counter("TLS handshakes completed, both directions")]
    tls_failed: Annotated[int, _counter(
        "TLS handshakes that failed or timed out, both directions: non-members, scanners,"
        " `--insecure` nodes", drop="TLS handshakes failed (another network, a scanner?)")]
    busy_refused: Annotated[int, _counter(
        "inbound connections closed at once because `max_pending_handshakes` (64) TLS"
        " handshakes were under way",
        drop="connections refused: too many handshakes at once")]
    refused_per_ip: Annotated[int, _counter(
        "inbound connections closed at once because their address already had"
        " `max_conns_per_ip` (32) open", drop="connections refused: too many from one address")]
    rate_limited: Annotated[int, _counter("the same as `messages.rate_limited`")]
    rejected_batches: Annotated[int, _counter("the same as `messages.rejected`")]
    new_origin_limited: Annotated[int, _counter(
        "batches dropped because a peer brought origins this node did not track faster than"
        " `new_origins_per_s` (100/s, bursts of 1,024)",
        drop="batches dropped: a peer brought new origins over its rate")]
    origins_tracked: Annotated[int, _gauge(
        "origin runs tracked for per-origin order and replay protection (at most"
        " `max_origins`, 16,384)")]
    origins_forgotten: Annotated[int, _counter(
        "origin runs forgotten to make room (a peer went over `max_origins_per_peer`, or the"
        " table was full)", drop="origin runs forgotten to make room (replay state)")]


class ApiStatus(Section):
    requests: Annotated[int, _counter(
        "requests received on all connections (blank lines not counted)")]
    errors: Annotated[int, _counter("error replies sent (`rate_limited` included)",
                                    drop="API error replies")]
    events_dropped: Annotated[int, _counter(
        "events not sent to subscribers that were reading too slowly",
        drop="events dropped: local subscribers read too slowly")]
    clients_refused: Annotated[int, _counter(
        "connections refused with `too_many_clients`",
        drop="API connections refused: too many clients")]
    clients_forbidden: Annotated[int, _counter(
        "connections refused with `forbidden`", drop="API connections refused: another user")]
    rate_limited: Annotated[int, _counter(
        "publishes and replays refused with `rate_limited`",
        drop="publishes or replays refused: a local app went over its rate")]
    replays: Annotated[int, _counter("replays served (`subscribe` with `since`)")]
    wills: Annotated[int, _counter(
        "last wills published: connections that ended without `bye`")]


class RequestsStatus(Section):
    asked: Annotated[int, _counter("requests sent by local apps ([request](#request))")]
    delivered: Annotated[int, _counter(
        "requests from other nodes handed to local delivery, whether or not an app"
        " subscribes to their topic")]
    replayed: Annotated[int, _counter(
        "request copies dropped because this node had taken them already (a replay)",
        drop="requests dropped: copies of ones already taken")]
    bad: Annotated[int, _counter("request items that did not decode (dropped)",
                                 drop="requests dropped: did not decode")]
    waiting: Annotated[int, _gauge("requests of local apps waiting for their replies now")]
    paths: Annotated[int, _gauge(
        "requests whose way back this node remembers, until their timeout (at most"
        " `request_paths`, 16,384)")]
    paths_evicted: Annotated[int, _counter(
        "reverse paths forgotten before their time to make room (a peer brought more than"
        " `request_paths_per_peer`, or the table was full)",
        drop="request paths forgotten to make room")]
    replies_sent: Annotated[int, _counter("replies of local apps ([reply](#reply))")]
    replies_in: Annotated[int, _counter("replies received from peers")]
    replies_taken: Annotated[int, _counter("replies handed to requests of local apps")]
    replies_forwarded: Annotated[int, _counter(
        "replies sent on towards the node that asked (this node is on their way back)")]
    replies_rejected: Annotated[int, _counter(
        "replies with a bad signature or body (the peer that sent one with a bad signature"
        " is disconnected)", drop="replies rejected: bad signature or body")]
    replies_dropped: Annotated[dict[str, int], _by_reason(
        "replies dropped, by reason: `unknown` (no such request waiting here: its timeout"
        " passed), `duplicate` (a second reply of the same node), `over_limit` (the request"
        " had its `max_replies`), `loop`, `hop_limited`, `link_down` (the link back closed),"
        " `late` (the asking app went), `too_large` (over the bytes a request collects)",
        "reason", "replies dropped")]


class StoreStatus(Section):
    enabled: Annotated[bool, _flag(
        "true when the node keeps its messages on disk ([store.md](store.md); off with"
        " `--store none`)")]
    path: Annotated[str, _info("the store file (empty when off)")]
    sync: Annotated[str, _info("`--sync`: `off`, `normal` or `full` (empty when off)")]
    rows: Annotated[int, _gauge("batches stored now")]
    messages: Annotated[int, _gauge("messages stored now (in those batches)")]
    bytes: Annotated[int, _gauge(
        "size of what is stored now, as retention counts it (frames plus 120 bytes per"
        " batch)", unit="bytes")]
    max_bytes: Annotated[int, _gauge("the size limit (`--store-bytes`; 0: none)",
                                     unit="bytes")]
    max_age_s: Annotated[float, _gauge(
        "how long batches are kept after their publication (`--store-age`; 0: no limit)",
        unit="seconds")]
    durables: Annotated[int, _gauge("durable subscriptions stored")]
    queued: Annotated[int, _counter("batches handed to the store's writer since start")]
    committed: Annotated[int, _counter(
        "batches of those written (or dropped) since start")]
    pending: Annotated[int, _gauge("batches waiting to be written now")]
    writes: Annotated[int, _counter("transactions written")]
    dropped: Annotated[int, _counter(
        "batches never written: the disk was full and over 100,000 batches waited",
        drop="batches not stored: the disk was full too long")]
    removed: Annotated[int, _counter(
        "batches removed by retention (`--store-age`, `--store-bytes`) since start")]
    failing: Annotated[bool, _flag(
        "true while writes fail (the disk is full): publishes that wait for the store get"
        " an error, and the writer tries again every second")]
    error: Annotated[str | None, _info("why the last write failed (null when it worked)")]
    restored: Annotated[int, _gauge("batches put back in history from the store at start")]
    unreadable: Annotated[int, _counter(
        "stored batches that could not be read at start (left out)",
        drop="stored batches unreadable at start (left out)")]


class MembersStatus(Section):
    alive: Annotated[int, _gauge("members alive now, this node included")]
    suspect: Annotated[int, _gauge("members suspected now (their suspicion timers run)")]
    dead: Annotated[int, _gauge("dead members still listed (forgotten after `member_reap`)")]
    left: Annotated[int, _gauge("members that left, still listed (the same)")]
    records: Annotated[int, _counter("member records that changed the list")]
    claims: Annotated[int, _counter(
        "suspect and dead claims that changed the list (confirmations included)")]
    stale: Annotated[int, _counter(
        "records and claims dropped before their signature was checked: nothing new in them")]
    refused: Annotated[int, _counter(
        "new members refused: the list was full of live ones (`max_members`)",
        drop="new members refused (member list full)")]
    bad: Annotated[int, _counter(
        "links closed for a bad member frame (a bad signature, a record over its bounds)",
        drop="links closed for bad member records")]
    rate_limited: Annotated[int, _counter(
        "member records, claims, probes and digests dropped: a link sent over `member_rate`",
        drop="member records over the rate limit")]
    refutations: Annotated[int, _counter("times this node said it is alive after a suspicion")]
    probes: Annotated[int, _counter("indirect probes of silent peers started")]
    probes_cleared: Annotated[int, _counter(
        "probes that ended well: an alive answer, or the peer was heard again")]
    probes_skipped: Annotated[int, _counter(
        "silent peers not probed: no other link was heard either (this node stalled?)")]
    bytes_sent: Annotated[int, _counter("bytes of member frames sent", unit="bytes",
                                        metric="sent_bytes")]
    interests: Annotated[int, _gauge("topic names and patterns this node's record says its"
                                     " apps subscribe to; -1: every topic")]
    records_paced: Annotated[int, _counter(
        "other members' records held back before they were flooded on: the member changed "
        "its record more than 2 times a second (the newest goes on later)")]
    interests_paced: Annotated[int, _counter(
        "other members' interest changes held back from the index: more than one a second")]


class HandlersStatus(Section):
    configured: Annotated[int, _gauge(
        "programs run on member events (`--on-event`)")]
    queued: Annotated[int, _gauge("events waiting for their handlers now (at most 64)")]
    ran: Annotated[int, _counter("handlers run to their end, whatever their exit status")]
    failed: Annotated[int, _counter(
        "handlers that exited non-zero or could not start (logged with the end of their"
        " standard error)", drop="event handlers failed")]
    timed_out: Annotated[int, _counter(
        "handlers killed: still running after `--event-timeout`",
        drop="event handlers killed: over --event-timeout")]
    dropped: Annotated[int, _counter(
        "events not handed to a handler: the queue of 64 was full",
        drop="member events not run by handlers: their queue was full")]


class NodeStatus(msgspec.Struct, kw_only=True, omit_defaults=True,
                 forbid_unknown_fields=True):
    """The ``status`` reply (without ``id`` and ``ok``)."""

    node_id: Annotated[str, _info("this node's id, 32 hex digits")]
    name: Annotated[str, _info("this node's name")]
    listen: Annotated[str, _info(
        "the TCP address it really listens on (with the real port when `--listen` asked for"
        " port 0)")]
    version: Annotated[str, _info("the p2pnode package version")]
    protocol: Annotated[int, _info("the wire protocol version ([protocol.md](protocol.md))")]
    uptime_s: Annotated[float, _gauge("seconds since the node started", unit="seconds")]
    peers: Annotated[int, _gauge("number of open links")]
    socket: Annotated[str | None, _info(
        "the path of this API socket (null for a node without one)")]
    clients: Annotated[int, _gauge("API connections open now, this one included")]
    messages: Annotated[MessagesStatus, _section("messages and batches")]
    gossip: Annotated[GossipStatus, _section("the gossip trees: announcements and repair")]
    mesh_view: Annotated[MeshViewStatus, _section("this node's view of the whole mesh")]
    history: Annotated[HistoryStatus, _section("the recent batches kept for repair and replay")]
    retained: Annotated[RetainedStatus, _section(
        "the retained messages, one per topic ([api.md](api.md#retained-messages))")]
    links: Annotated[LinksStatus | None, _section("links to peers")] = None
    mdns: Annotated[MdnsStatus | None, _section("mDNS discovery")] = None
    security: Annotated[SecurityStatus, _section("protection of links and batches")]
    api: Annotated[ApiStatus | None, _section("the local API")] = None
    requests: Annotated[RequestsStatus, _section("request/reply")]
    store: Annotated[StoreStatus, _section("the message store on disk")]
    members: Annotated[MembersStatus, _section(
        "the member list and its failure detector ([protocol.md](protocol.md#membership))")]
    handlers: Annotated[HandlersStatus, _section(
        "programs run on member events ([operations.md](operations.md#event-handlers))")]
    interest: Annotated[InterestStatus | None, _section(
        "interest routing, with `--gossip interest` ([interest.md](interest.md))")] = None


_encoder = msgspec.json.Encoder()


def encode_status_reply(req_id: Scalar, status: NodeStatus) -> bytes:
    """The reply line to a ``status`` request: ``{"id":…, "ok":true, …status…}``."""
    head: dict[str, Any] = {"id": req_id} if req_id is not None else {}
    head["ok"] = True
    return _encoder.encode(head)[:-1] + b"," + _encoder.encode(status)[1:] + b"\n"
