"""One frozen object that holds every setting, limit and timeout of a node.

Timeouts are float seconds. Every value is checked in ``NodeConfig.__post_init__``;
a bad value raises ``ConfigError`` naming the setting.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import stat
from pathlib import Path

from ..errors import ConfigError
from .tags import pairs_problem

DEFAULT_PORT = 7420
DEFAULT_TOPIC = "default"
#: Largest topic name, in UTF-8 bytes. Part of the wire protocol.
MAX_TOPIC_BYTES = 256
#: Longest Unix socket path, in bytes (``sun_path`` is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT`` or (with ``default_port``) a bare ``HOST``.

    Raises ``ConfigError`` with a readable message when the text is malformed.
    """
    text = text.strip()
    if not text:
        raise ConfigError("empty address")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"bad address {text!r}: missing ']'")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"bad address {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        host, port_text = text, None  # a bare IPv6 address
    else:
        host, port_text = text, None
    if host and (problem := host_problem(host)):
        raise ConfigError(f"bad address {text!r}: {problem}")
    if not host:
        port = port_text or str(DEFAULT_PORT)
        raise ConfigError(f"bad address {text!r}: empty host (expected HOST:PORT, such as "
                          f"0.0.0.0:{port} or 127.0.0.1:{port})")
    if port_text is None:
        if host.isascii() and host.isdigit():
            raise ConfigError(f"bad address {text!r}: a bare number is not a host; expected "
                              f"HOST:PORT, such as 127.0.0.1:{host}")
        if default_port is None:
            raise ConfigError(f"bad address {text!r}: expected HOST:PORT, such as "
                              f"127.0.0.1:{DEFAULT_PORT}")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bad address {text!r}: port must be 0-65535")
    return host, int(port_text)


def valid_hostports(texts: list[str]) -> tuple[tuple[str, int], ...]:
    """The addresses of ``texts`` that parse as ``HOST:PORT`` (the others are skipped):
    addresses other nodes advertised (each member's are parsed at every change of it,
    hence the cache)."""
    return tuple(addr for text in texts if (addr := _advertised(text)) is not None)


@functools.lru_cache(maxsize=4096)
def _advertised(text: str) -> tuple[str, int] | None:
    try:
        return parse_hostport(text)
    except ConfigError:
        return None


_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither an IP address nor a host name (letters, digits, ``-``,
    ``_`` and dots; international names as IDNA), or None."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        encoded = ""
    if _HOST_NAME.fullmatch(encoded) and ".." not in encoded:
        return None
    return f"{host!r} is neither an IP address nor a host name"


def socket_path_problem(path: str | os.PathLike[str]) -> str | None:
    """What makes ``path`` unusable as a Unix socket path (too long: over
    ``MAX_SOCKET_PATH`` bytes), or None."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        return (f"{size} bytes, over the limit of {MAX_SOCKET_PATH} bytes for a Unix socket "
                "path; choose a shorter path")
    return None


def format_hostport(host: str, port: int) -> str:
    """Format an address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def private_socket_dir() -> Path:
    """Where the default socket lives when there is no ``$XDG_RUNTIME_DIR``:
    ``/tmp/p2pnode-UID``, a directory the node creates with mode 0700 and refuses to
    use unless it is its user's own and closed to others (``owners.ensure_private_dir``),
    so that no other user can take the path first."""
    return Path(f"/tmp/p2pnode-{os.geteuid()}")


def default_socket_path() -> Path:
    """``$P2PNODE_SOCKET``; else ``$XDG_RUNTIME_DIR/p2pnode.sock`` if that is a directory
    of this user's; else ``/tmp/p2pnode-UID/p2pnode.sock`` (``private_socket_dir``)."""
    env = os.environ.get("P2PNODE_SOCKET")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.stat(runtime)
        except OSError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                return Path(runtime) / "p2pnode.sock"
    return private_socket_dir() / "p2pnode.sock"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/p2pnode``, else ``~/.local/share/p2pnode``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "p2pnode"


#: Why ``insecure`` and ``network_key`` are refused together.
INSECURE_WITH_KEY = (
    "insecure links are plaintext and unauthenticated, so the network key would keep no "
    "one out. Drop the one or the other: the key alone gives encrypted links between "
    "members only")

#: Programs run on member events (``--on-event``), at most.
MAX_EVENT_HANDLERS = 64

#: The smallest ``max_frame``: an IHave or Graft of 4,096 entries takes about 147 KiB.
MIN_FRAME = 160 * 1024


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to run. All sizes are bytes, all times float seconds."""

    name: str = "node"
    #: This node's tags (``--tag KEY=VALUE``): what it tells the mesh about itself.
    tags: tuple[tuple[str, str], ...] = ()
    #: Programs run on member events (``--on-event KIND=PATH``): (kind, path) pairs, the
    #: kind one of the member events or ``member_*`` (docs/operations.md, "Handlers").
    event_handlers: tuple[tuple[str, str], ...] = ()
    event_timeout: float = 10.0  # a handler still running after this long is killed
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    socket_path: Path = dataclasses.field(default_factory=default_socket_path)
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    peers: tuple[tuple[str, int], ...] = ()
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    advertise: str | None = None
    network_key: Path | None = None  # None: the open network (encrypted, anyone may join)
    insecure: bool = False  # plaintext links, for debugging only

    # Sizes.
    max_frame: int = 1 << 20
    max_payload: int = 512 * 1024
    link_queue_bytes: int = 8 << 20
    client_queue_bytes: int = 8 << 20
    read_size: int = 256 * 1024

    # Gossip (docs/protocol.md, "Broadcast trees").
    gossip: str = "tree"  # "tree" (Plumtree: about one copy per node), "flood" or "interest"
    max_hops: int = 32
    seen_max_entries: int = 200_000
    seen_ttl: float = 300.0
    graft_timeout: float = 0.1  # ask for an announced batch that did not come this soon
    optimize_hops: int = 3  # swap a tree link for one shorter by this many hops (0: never)
    order_hold: float = 1.0  # hold an origin's later batches this long for a missing one
    history_batches: int = 20_000  # recent batches kept for repair and replay ...
    history_bytes: int = 4 << 20  # ... at most this many bytes of them ...
    history_age: float = 300.0  # ... for at most this long (at most seen_ttl)
    # The message store on disk (docs/store.md): "sqlite" (a file in the data
    # directory; off for a node given its identity, as tests and simulations are),
    # "none" (history in memory only), or the path of the store's file.
    store: str = "sqlite"
    store_age: float = 86_400.0  # stored messages are kept this long after publication ...
    store_bytes: int = 256 << 20  # ... in at most this many bytes (0: no limit)
    store_sync: str = "normal"  # when a publish is confirmed: "off", "normal", "full"
    durable_max_unacked: int = 1000  # messages a durable subscriber may have unconfirmed
    max_durables: int = 1000  # durable subscriptions kept in the store at most
    mesh_interval: float = 30.0  # share this node's link list this often (0: never)
    mesh_min_interval: float = 2.0  # ... and after a link change, at most this often
    mesh_max_nodes: int = 4096  # nodes in the mesh view

    # Retained messages and last wills (docs/api.md, "Retained messages", "will").
    retained_max_topics: int = 10_000  # topics with a retained message (tombstones too)
    retained_max_bytes: int = 16 << 20  # ... and their batches' bytes (0: keep none)
    retained_tombstone_age: float = 86_400.0  # a cleared topic is remembered this long
    retained_max_skew: float = 60.0  # refuse retained messages stamped this far ahead
    will_max_bytes: int = 64 << 10  # the largest payload of a last will (and max_payload)

    # Connections and link health.
    max_links: int = 16  # hard cap: inbound links beyond it are refused
    degree_low: int = 4  # under this many links, dial more known (discovered) peers
    degree_high: int = 8  # over this many, prune a link to a well-connected peer
    ping_interval: float = 1.0
    link_timeout: float = 3.0  # a peer silent this long is dead
    slow_peer_timeout: float = 3.0  # a peer whose queue stays full this long is dropped
    publish_wait_max: float = 0.25  # publishers wait at most this long for one slow link
    prune_cooldown: float = 30.0  # a peer that pruned us is not redialled for this long
    seed: int | None = None  # seeds the node's random choices (tests, simulations)

    # Limits against floods and abuse (docs/security.md).
    peer_bytes_per_s: float = 64 << 20  # gossip bytes a peer may send us per second
    peer_batches_per_s: float = 20_000  # signed batches a peer may send us per second
    peer_pings_per_s: float = 10.0  # Pings a peer may send us per second; more close the link
    client_publish_per_s: float = 200_000  # messages one local client may publish per second
    new_origins_per_s: float = 100.0  # origins not yet known one peer may bring per second
    max_origins: int = 16_384  # origin runs tracked for order and replay protection ...
    max_origins_per_peer: int = 4096  # ... at most this many charged to one peer
    client_replays_per_s: float = 5.0  # subscribes with since per client per second (bursts: x4)
    max_pending_handshakes: int = 64  # inbound connections still in TLS or link handshake
    max_conns_per_ip: int = 32  # open inbound connections from one address
    api_group: str | None = None  # also admit local clients of this group (socket mode 0660)
    max_clients: int = 256
    handshake_timeout: float = 5.0
    dial_timeout: float = 5.0
    redial_initial: float = 0.25
    redial_max: float = 2.0  # a dead static peer is retried at least this often
    discovery_grace: float = 1.0  # the higher-id node waits this long before dialling
    max_discovered: int = 1024  # discovered nodes tracked at most

    # Membership (docs/protocol.md, "Membership"; docs/failures.md).
    #: Dial live members learned from the member list (peer exchange), as discovered nodes.
    peer_exchange: bool = True
    max_members: int = 4096  # members kept; when full, new ones are refused (1-6000)
    member_sync_interval: float = 30.0  # send the member-list hash to one link this often
    member_rate: float = 200.0  # member records and claims one link may bring per second
    member_reap: float = 3600.0  # dead and left members are forgotten after this long
    probe_k: int = 3  # peers asked whether they still hear a silent peer (0: none)
    probe_timeout: float = 0.5  # ... and how long their answers are awaited
    suspicion_min: float = 1.5  # the least time a suspect member has to refute
    suspicion_mult: float = 3.0  # the most: this x log10(members + 1) x ping_interval

    # Request/reply (docs/api.md, "request"; docs/protocol.md, "Requests and replies").
    request_timeout_max: float = 60.0  # the longest a request may wait for its replies
    request_max_replies: int = 1000  # the most replies one request may ask for
    request_paths: int = 16_384  # requests whose reverse path (for replies) is remembered ...
    request_paths_per_peer: int = 4096  # ... at most this many that came from one peer
    client_requests: int = 64  # requests one local client may have waiting at once
    max_requests: int = 1024  # requests all local clients may have waiting at once
    reply_bytes_per_request: int = 2 << 20  # replies collected for one request (as JSON)
    reply_bytes_total: int = 32 << 20  # ... for all waiting requests together

    def _check_store(self) -> None:
        if not self.store:
            raise ConfigError("store must be sqlite, none or the path of a file")
        if self.store_sync not in ("off", "normal", "full"):
            raise ConfigError("store_sync must be off, normal or full")
        if not self.store_age > 0 or self.store_bytes < 0:
            raise ConfigError("store_age must be greater than 0 and store_bytes at least 0")
        if not 1 <= self.durable_max_unacked <= 100_000:
            raise ConfigError("durable_max_unacked must be 1-100000")
        if not 1 <= self.max_durables <= 1_000_000:
            raise ConfigError("max_durables must be 1-1000000")

    def __post_init__(self) -> None:
        self._check_requests()
        name_bytes = len(self.name.encode("utf-8", "surrogatepass"))
        if not 1 <= name_bytes <= 64 or not self.name.isprintable():
            raise ConfigError("name must be 1-64 bytes of printable UTF-8")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError("listen_port must be 0-65535")
        positive_ints = (
            "max_frame", "max_payload", "link_queue_bytes", "client_queue_bytes",
            "read_size", "max_hops", "seen_max_entries", "max_links", "max_clients",
            "max_discovered", "degree_low", "degree_high", "max_pending_handshakes",
            "max_conns_per_ip", "max_origins", "max_origins_per_peer",
        )
        for field in positive_ints:
            if getattr(self, field) < 1:
                raise ConfigError(f"{field} must be at least 1")
        self._check_store()
        if self.discovery_grace < 0:
            raise ConfigError("discovery_grace must be at least 0")
        positive_floats = (
            "seen_ttl", "handshake_timeout", "dial_timeout", "redial_initial", "redial_max",
            "ping_interval", "link_timeout", "slow_peer_timeout", "publish_wait_max",
            "prune_cooldown", "peer_bytes_per_s", "peer_batches_per_s", "client_publish_per_s",
            "new_origins_per_s", "peer_pings_per_s", "client_replays_per_s",
        )
        for field in positive_floats:
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be greater than 0")
        if self.max_frame < MIN_FRAME:
            raise ConfigError(f"max_frame must be at least {MIN_FRAME} (a full IHave or Graft)")
        if self.max_payload + MAX_TOPIC_BYTES + 256 > self.max_frame:
            raise ConfigError("max_frame must exceed max_payload by at least 512 bytes")
        if self.max_hops > 255:
            raise ConfigError("max_hops must be at most 255")
        if not self.degree_low <= self.degree_high <= self.max_links:
            raise ConfigError("need degree_low <= degree_high <= max_links")
        if self.link_timeout <= self.ping_interval:
            raise ConfigError("link_timeout must be greater than ping_interval")
        if self.peer_pings_per_s * self.ping_interval < 2:
            # Peers with this node's settings must stay well within each other's limit.
            raise ConfigError("peer_pings_per_s must be at least 2 / ping_interval (twice "
                              "the rate this node pings at)")
        if self.mesh_interval < 0 or self.mesh_min_interval <= 0 or self.mesh_max_nodes < 1:
            raise ConfigError("mesh_interval must be >= 0, mesh_min_interval > 0 and "
                              "mesh_max_nodes >= 1")
        if self.gossip not in ("tree", "flood", "interest"):
            raise ConfigError("gossip must be 'tree', 'flood' or 'interest'")
        for field in ("graft_timeout", "order_hold", "history_age"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be greater than 0")
        if self.history_batches < 0 or self.history_bytes < 0 or self.optimize_hops < 0:
            raise ConfigError("history_batches, history_bytes and optimize_hops must be >= 0")
        if self.history_age > self.seen_ttl:
            # A batch repaired from history must still be in every seen-cache, or a node
            # that forgot it would deliver it twice.
            raise ConfigError("history_age must be at most seen_ttl")
        self._check_retained()
        self._check_pairs_and_paths()
        self._check_members()
        self._check_tags_and_handlers()

    def _check_members(self) -> None:
        if not 1 <= self.max_members <= 6000:
            raise ConfigError("max_members must be 1-6000 (a member digest fits one frame)")
        for field in ("member_sync_interval", "member_rate", "member_reap", "probe_timeout",
                      "suspicion_min"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be greater than 0")
        if not 0 <= self.probe_k <= 16:
            raise ConfigError("probe_k must be 0-16")
        if not 0 <= self.suspicion_mult <= 100:
            raise ConfigError("suspicion_mult must be 0-100")

    def _check_tags_and_handlers(self) -> None:
        if problem := pairs_problem(self.tags):
            raise ConfigError(f"tags: {problem}")
        if not 0 < self.event_timeout <= 3600:
            raise ConfigError("event_timeout must be greater than 0 and at most 3600")
        if len(self.event_handlers) > MAX_EVENT_HANDLERS:
            raise ConfigError(f"event_handlers: at most {MAX_EVENT_HANDLERS} handlers")

    def _check_pairs_and_paths(self) -> None:
        if self.max_origins_per_peer > self.max_origins:
            raise ConfigError("max_origins_per_peer must be at most max_origins")
        if self.redial_max < self.redial_initial:
            raise ConfigError("redial_max must be at least redial_initial")
        if self.insecure and self.network_key is not None:
            raise ConfigError("insecure and network_key cannot be used together: "
                              + INSECURE_WITH_KEY)
        if problem := socket_path_problem(self.socket_path):
            raise ConfigError(f"socket_path {self.socket_path}: {problem}")

    def _check_retained(self) -> None:
        if self.retained_max_topics < 0 or self.retained_max_bytes < 0:
            raise ConfigError("retained_max_topics and retained_max_bytes must be >= 0")
        if not self.retained_tombstone_age > 0 or not self.retained_max_skew >= 0:
            raise ConfigError("retained_tombstone_age must be > 0 and retained_max_skew >= 0")
        if self.will_max_bytes < 0:
            raise ConfigError("will_max_bytes must be >= 0")

    def _check_requests(self) -> None:
        for field in ("request_max_replies", "request_paths", "request_paths_per_peer",
                      "client_requests", "max_requests", "reply_bytes_per_request",
                      "reply_bytes_total"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{field} must be at least 1")
        if not 0 < self.request_timeout_max <= 3600:
            raise ConfigError("request_timeout_max must be greater than 0 and at most 3600")
        if self.request_max_replies > 65535:
            raise ConfigError("request_max_replies must be at most 65535")
        if self.request_paths_per_peer > self.request_paths:
            raise ConfigError("request_paths_per_peer must be at most request_paths")

    @property
    def max_request_line(self) -> int:
        """Largest local API request line: a base64 payload plus room for the rest."""
        return (self.max_payload * 4) // 3 + 4 + MAX_TOPIC_BYTES * 6 + 1024
