"""The local API server: JSON lines over a Unix domain socket.

Each client connection has one reader (this module's session loop) and one
writer (an ``OutQueue``). Replies go out in request order. Events for a
subscriber that does not keep up are dropped and counted, never buffered
without bound; a client that does not read its replies stops being read.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from ..config.settings import NodeConfig
from ..errors import ConfigError
from ..gossip.retained import RetainedReplay
from ..members import Membership
from ..ratelimit import TokenBucket
from ..store.service import StoreService
from .admission import admitted, refuse_client
from .confirming import Confirmer, ConfirmingStore, store_refusal
from .delivery import DeliveryOps
from .durables import DurableCall, Durables
from .members import MEMBER_OPS, MemberOps
from .monitor import MonitorHub
from .protocol import (
    Ack,
    ApiError,
    Bye,
    Mesh,
    Monitor,
    Peers,
    Publish,
    ReplyOp,
    Request,
    RequestOp,
    Status,
    StoreOp,
    Subscribe,
    Sync,
    Unsubscribe,
    check_topics,
    decode_request,
    encode_closing,
    encode_error,
    encode_reply,
    parse_request,
    unsubscribe_topics,
)
from .publishing import take_publish
from .replaying import HistoryReplay, Replayer, ReplayRequest
from .requests import RequestBackend, RequestDesk, answer_waiting
from .session import ApiStats, Session
from .sockfile import bind_unix_socket, remove_if_ours
from .status import NodeStatus, encode_status_reply
from .subscribers import Subscribers
from .subscribing import SubscribeOps
from .waiting import StoreInfo, store_reply, wait_peers
from .wills import WILL_OPS, publish_will, will_request

log = logging.getLogger("p2pnode.api")
#: The longest the server handles one client's request lines before it lets other
#: tasks (links, other clients) run (seconds of real time).
TURN_BUDGET = 0.002
#: While an app has sent more than the node has read, its publishes of up to this many
#: bytes of requests (several reads) are signed together: fewer, fuller batches.
COALESCE_BYTES = 256 * 1024


class ApiBackend(RequestBackend, StoreInfo, Protocol):
    """What the API server needs from the node."""

    def publish(self, topic: str, payload: bytes, to: bytes | None, *,
                defer_flush: bool = False, retain: bool = False) -> tuple[str, int]: ...
    def knows_node(self, node_id: bytes) -> bool: ...
    async def wait_peer_count(self, low: int, high: int) -> None: ...
    async def wait_links_writable(self) -> None: ...
    def flush(self) -> None: ...
    def peers_info(self) -> list[dict[str, Any]]: ...
    def status_info(self) -> NodeStatus: ...
    def open_replay(self, since: bytes | float, topics: frozenset[str]) -> HistoryReplay: ...
    def mesh_info(self) -> dict[str, Any]: ...
    def retained_replay(self, topics: list[str]) -> RetainedReplay: ...
    def has_retained(self, topics: list[str]) -> bool: ...
    def retained_refusal(self, topic: str, size: int) -> str | None: ...
    def message_store(self) -> StoreService | None: ...
    node_id: bytes
    membership: Membership


class ApiServer(DeliveryOps, SubscribeOps, MemberOps):
    """Serves the local API on ``config.socket_path`` for ``backend``."""

    def __init__(self, config: NodeConfig, backend: ApiBackend) -> None:
        self.config = config
        self.backend = backend
        self.sessions: set[Session] = set()
        self._touched: set[Session] = set()  # sessions with events queued: send_touched
        self._holding = False  # DeliveryOps.hold_wakes
        self._sessions_changed = trio.Event()
        self.stats = ApiStats()
        #: The clock of the publish rate limit: read once per read of requests (and
        #: after each wait within it), not once per publish.
        self._now = 0.0
        self._subs: Subscribers[Session] = Subscribers()
        self.monitors: MonitorHub[Session] = MonitorHub(self._send_event)
        self._replayer = Replayer(backend.open_replay, config.client_queue_bytes,
                                  open_retained=backend.retained_replay)
        self.requests = RequestDesk(config, backend)
        #: Fills the places of publishes' replies once the store has their messages.
        self.confirmer = Confirmer(self.stats)
        self._store: ConfirmingStore | None = None  # the message store (None: off)
        #: ... when the ``ok`` to a publish waits until it is stored (docs/store.md).
        self._confirming: ConfirmingStore | None = None
        self.durables = Durables(config, backend.node_id)
        self.durables.on_change = self._interest_changed
        #: Called when a subscription is added or removed (a session's, a durable one):
        #: the node then updates its member record (``interest``), a second later at most.
        self.on_interest: Callable[[], None] | None = None
        self._membership = lambda: backend.membership
        self._member_watchers: set[Session] = set()  # connections that get member events
        self._member_unlisten: Callable[[], None] | None = None
        self._tag_bucket: TokenBucket | None = None  # this node's tag changes (tags op)
        self._group: grp.struct_group | None = None
        self._serving: os.stat_result | None = None  # the socket file, while it serves
        if config.api_group is not None:
            try:
                self._group = grp.getgrnam(config.api_group)
            except KeyError:
                raise ConfigError(f"api group {config.api_group!r} does not exist") from None

    # -- serving -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket and serve clients until cancelled; removes the socket file on exit.

        Raises ``SocketInUse`` if a live node already serves the path, or if the
        path exists and is not a socket; ``UnsafePath`` if the default private
        directory is not safe (``owners.ensure_private_dir``); ``OSError`` if binding
        fails.
        """
        path = self.config.socket_path
        self._store = self.backend.message_store()
        if self.config.store_sync != "off":
            self._confirming = self._store
        sock = await bind_unix_socket(path)
        if self._group is not None:
            os.chown(path, -1, self._group.gr_gid)
            os.chmod(path, 0o660)
        ident = os.stat(path)
        try:
            listener = trio.SocketListener(sock)
            async with trio.open_nursery() as nursery:
                self.durables.attach(self.backend.message_store(), nursery)
                nursery.start_soon(self._accept_loop, listener, nursery)
                if self._confirming is not None:
                    nursery.start_soon(self.confirmer.run, self._confirming)
                self._serving = ident
                task_status.started(path)
        finally:
            self._serving = None
            self.monitors.close()
            sock.close()
            remove_if_ours(path, ident)

    async def close_clients(self, reason: str, grace: float) -> None:
        """Tell every client why its connection ends (a ``closing`` event naming how
        many of its requests were handled), and wait up to ``grace`` seconds for what
        is queued to them to go out. New requests are no longer read; requests that wait
        for replies are answered with what they have."""
        self.backend.finish_requests()
        for session in list(self.sessions):
            session.out.put_force(encode_closing(reason, session.requests))
            session.out.close()  # the writer sends what is queued, then ends the session
        with trio.move_on_after(grace):
            while self.sessions:
                self._sessions_changed = trio.Event()
                await self._sessions_changed.wait()

    def serving_problem(self) -> str | None:
        """Why clients cannot reach this server now (not serving, or its socket file
        removed or replaced), or None when it serves its socket."""
        path = self.config.socket_path
        if self._serving is None:
            return f"not serving the socket {path}"
        try:
            now = os.stat(path)
        except OSError as exc:
            return f"the socket {path} is gone ({exc.strerror})"
        if (now.st_dev, now.st_ino) != (self._serving.st_dev, self._serving.st_ino):
            return f"the socket {path} was replaced by another file"
        return None

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(0.1)
                    continue
                raise
            nursery.start_soon(self._serve_client, stream)

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        try:
            if not admitted(stream, self._group):
                self.stats.clients_forbidden += 1
                err = ApiError("forbidden", "this node admits only its own user"
                               + (f" and group {self._group.gr_name}" if self._group else ""))
                await refuse_client(stream, err)
                return
            if len(self.sessions) >= self.config.max_clients:
                self.stats.clients_refused += 1
                err = ApiError("too_many_clients", "the node serves its maximum of clients")
                await refuse_client(stream, err)
                return
            self.stats.clients_accepted += 1
            session = Session(self.config)
            session.fd = stream.socket.fileno()
            self.sessions.add(session)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, session, stream, nursery.cancel_scope)
                    with contextlib.suppress(trio.BrokenResourceError,
                                             trio.ClosedResourceError):
                        await self._read(session, stream)  # ends when the client goes
                    session.out.wake()  # the replies of the last read, if it stopped short
                    self.backend.flush()
                    self._submit(session)
                    await answer_waiting(session.order, stream)
                    session.out.close()
                    nursery.cancel_scope.deadline = trio.current_time() + 5
            finally:
                if publish_will(session, self.backend):  # no bye: the app crashed
                    self.stats.wills += 1
                self.requests.drop(session)
                self.durables.drop(session)
                self._unsubscribe(session, [])
                self.monitors.remove(session)
                self.unwatch_members(session)
                self.sessions.discard(session)
                self._touched.discard(session)
                self._sessions_changed.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _write(self, session: Session, stream: trio.SocketStream,
                     scope: trio.CancelScope) -> None:
        try:
            await session.out.run_writer(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()

    async def _read(self, session: Session, stream: trio.SocketStream) -> None:
        """Read request lines and answer them in order, until EOF or a too-large line."""
        max_line = self.config.max_request_line
        buf = b""
        unsigned = 0  # bytes read since this connection's publishes were last flushed
        unsubmitted = 0  # ... and its publishes since (their replies wait for the store)
        while not (session.out.closing or session.said_bye):  # bye: nothing more is read
            data = await session.receive()
            if not data:
                return
            buf += data
            if b"\n" not in data:
                if len(buf) > max_line:
                    self._too_large(session, len(buf))
                    return
                continue
            *lines, buf = buf.split(b"\n")
            published = self.stats.published
            if not await self._handle_lines(session, lines, stream):
                return
            # The replies go out now, before the read's messages are signed (the app need
            # not wait for the signature): written straight to the socket, as far as it
            # takes them without waiting (the writer task sends the rest).
            session.out.try_send(session.fd)
            session.out.wake()  # what the socket did not take (the replies woke no task)
            if self.stats.published != published or unsigned:
                unsigned += len(data)
                unsubmitted += self.stats.published - published
            if unsigned and unsigned < COALESCE_BYTES and session.waiting() and \
                    session.gate.waiting + unsubmitted <= self.config.client_queue_bytes // 256:
                continue  # the app sent more already: its messages join the same batches
            unsubmitted = 0
            flushed = unsigned > 0
            if flushed:
                unsigned = 0
                self.backend.flush()  # one signed batch (per topic) per read or reads
            self._submit(session)  # their replies wait until the store has the batches
            if self._confirming is not None:  # written at once: no thread, no wake-up
                filled = self.confirmer.confirm_now(self._confirming)
                if filled:
                    session.out.try_send(session.fd)
                for order in filled:
                    order.out.wake()  # what is left, and other connections' replies
            if len(buf) > max_line:
                self._too_large(session, len(buf))
                return
            await session.out.wait_writable()
            await session.order.wait_room(self.config.client_queue_bytes // 2)
            await session.gate.wait_room(self.config.client_queue_bytes // 256)
            if flushed:
                # Backpressure: a fast publisher waits while the links fill up.
                await self.backend.wait_links_writable()

    async def _handle_lines(self, session: Session, lines: list[bytes],
                            stream: trio.SocketStream) -> bool:
        """Answer the request lines of one read, in order. Other tasks get a turn
        between two lines at least every ``TURN_BUDGET`` seconds, so that a read full of
        costly requests cannot hold up links and other clients (never after the last
        line: the read's end gives them one, and its replies go without the writer
        task). Returns False if the session must end (a line too long, or the client
        hung up)."""
        max_line = self.config.max_request_line
        turn = time.perf_counter()
        self._now = trio.current_time()
        for line in lines:
            if time.perf_counter() - turn > TURN_BUDGET:
                # Not signed yet: the read's publishes share their batches all the same.
                session.out.wake()
                await trio.lowlevel.checkpoint()
                turn = time.perf_counter()
                self._now = trio.current_time()
            if session.out.closing or session.said_bye:  # the node is leaving, or the app
                self.backend.flush()
                return False
            if len(line) > max_line:
                self.backend.flush()
                self._too_large(session, len(line))
                return False
            waiting = self._handle_line(session, line)
            if waiting is not None:
                self.backend.flush()  # what was published so far goes before any wait
                self._submit(session)
                session.out.wake()
                if isinstance(waiting, ReplayRequest):
                    await self._replay(session, waiting)
                elif isinstance(waiting, DurableCall):
                    self.stats.errors += not await self.durables.answer(session, waiting)
                elif isinstance(waiting, StoreOp):
                    self._put_answer(session, await store_reply(self.backend, waiting))
                elif not await self._wait_peers(session, waiting, stream):
                    return False
                turn = time.perf_counter()
                self._now = trio.current_time()
        return True

    def _submit(self, session: Session) -> None:
        """Call after a flush: the replies of the publishes handled since the last call
        go once the store has their messages (``Confirmer.submit``)."""
        if session.gate and self._confirming is not None:
            self.confirmer.submit(self._confirming, session.gate, session.order)

    def _too_large(self, session: Session, size: int) -> None:
        self.stats.errors += 1
        err = ApiError("too_large", f"request line of {size}+ bytes exceeds "
                       f"{self.config.max_request_line}; closing the connection")
        err.req = session.requests + 1
        session.order.put(encode_error(err))

    def _handle_line(self, session: Session,
                     line: bytes) -> Peers | ReplayRequest | DurableCall | StoreOp | None:
        """Answer one request line; returns a request that must wait first (``peers``
        with bounds, ``subscribe`` with ``since``, a durable ``subscribe`` or
        ``unsubscribe``: the store's worker thread)."""
        if not line or line.isspace():  # JSON allows the spaces around a request
            return None
        self.stats.requests += 1
        session.requests += 1
        try:
            try:
                req = decode_request(line)
            except Exception:  # parsed again, slowly, for the error that explains it
                req = parse_request(line)
            # A publish, the hot path, without a call more.
            reply = self._publish(session, req) if type(req) is Publish else self._handle(
                session, req)
        except ApiError as err:
            self.stats.errors += 1
            err.req = session.requests
            reply = encode_error(err)
        if isinstance(reply, bytes):
            session.order.put(reply, wake=False)  # sent once the read is handled (_read)
            return None
        return reply  # None (a publish taken with "ack": false), or a request that waits

    async def _wait_peers(self, session: Session, req: Peers,
                          stream: trio.SocketStream) -> bool:
        """Answer a ``peers`` request that waits (``wait_peers``). Returns False if the
        client hung up meanwhile (the session ends)."""
        reply = await wait_peers(self.backend, req, stream)
        if reply is None:
            return False
        self._put_answer(session, reply)
        return True

    def _put_answer(self, session: Session, reply: bytes | ApiError) -> None:
        """Queue the answer of a request that waited: its reply, or its error."""
        if isinstance(reply, ApiError):
            self.stats.errors += 1
            reply.req = session.requests
            reply = encode_error(reply)
        session.order.put(reply)

    def _publish(self, session: Session, req: Publish) -> bytes | None:
        """Take a publish: its reply line, or None (none, or it waits for the store)."""
        if not session.bucket.take(1, self._now):
            self.stats.rate_limited += 1
            raise ApiError("rate_limited", f"over {self.config.client_publish_per_s:g} "
                           "publishes per second; slow down and retry", req.id)
        if self._store is not None and (refused := store_refusal(self._store, req.id)):
            raise refused
        # The read loop flushes (wait_links_writable) once the read is handled.
        msg_id, sent_to = take_publish(req, self.backend, self.config.max_payload)
        self.stats.published += 1
        line = encode_reply(req.id, {"msg_id": msg_id, "peers": sent_to}) if req.ack else b""
        if self._confirming is not None:  # the reply waits for the store
            session.gate.add(session.order, req.id, line, session.requests)
            return None
        return line or None

    def _handle(self, session: Session, req: Request,
                ) -> bytes | Peers | ReplayRequest | DurableCall | StoreOp | None:
        if type(req) is Publish:
            return self._publish(session, req)
        if type(req) is Subscribe:
            if req.durable is not None:
                return self.durables.subscribe(session, req)
            topics = check_topics(req.topics, req.id)
            retained = req.retained and self.backend.has_retained(topics)
            if req.since is None and not retained and req.seen is None:
                self._subscribe(session, topics, req.id)
                return encode_reply(req.id, {})
            return self._check_replay(session, topics, req, retained)
        if type(req) is Unsubscribe:
            if req.durable is not None:
                return self.durables.unsubscribe(session, req)
            self._unsubscribe(session, check_topics(unsubscribe_topics(req), req.id))
            return encode_reply(req.id, {})
        if type(req) is Ack:
            return self.durables.ack(session, req)
        if type(req) is Peers:
            if req.waits:
                return req
            return encode_reply(req.id, {"peers": self.backend.peers_info()})
        if type(req) is Monitor:
            self.monitors.add(session, req.level, req.messages)
            return encode_reply(req.id, {})
        if type(req) is Mesh:
            return encode_reply(req.id, self.backend.mesh_info())
        if type(req) is Sync:
            return encode_reply(req.id, {})
        if type(req) is StoreOp:
            return req  # answered once read from the disk (waiting.store_reply)
        if isinstance(req, WILL_OPS):
            if type(req) is Bye:  # the app may resume its durables as soon as it is answered
                self.durables.drop(session)
            return will_request(session, req, min(self.config.will_max_bytes,
                                                  self.config.max_payload), self.backend)
        if type(req) is RequestOp:
            self.requests.request(session, session.order, req)
            return None  # answered once its replies came (ReplyOrder keeps the order)
        if type(req) is ReplyOp:
            return self.requests.reply(req)
        if isinstance(req, MEMBER_OPS):
            return self.member_request(session, req)
        assert type(req) is Status
        return encode_status_reply(req.id, self.backend.status_info())

