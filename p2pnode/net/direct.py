"""A link's bytes written and read without trio's stream layers when that is safe.

A lone frame (a batch published alone, a Pong) would otherwise wake the link's writer
task and go through ``SSLStream.send_all``: a lock, the socket's send and a pass
through trio's scheduler after it (each such pass is an ``epoll_wait`` and some
Python). On this 2-core VM that added about 100 µs to a message's way between two
nodes (docs/performance.md, "Latency at 1,000 messages/s"). ``Direct.write_now``
encrypts and writes a frame from the task that made it, with one non-blocking
``send``, when nothing else is being sent on the stream; ``Direct.receive`` reads and
decrypts the same way, waiting (and letting other tasks run) only when nothing is
there. Anything unusual (a send or a read under way in trio's own code, TLS data to
send while reading, an error) goes the ordinary way, through the ``SSLStream``.

This leans on the internals of ``trio.SSLStream`` (trio 0.2x-0.3x): its SSL object,
its memory BIOs, its inner send lock and its state. ``direct_for`` checks they are
there and gives None otherwise: the link then uses the stream as it is.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import trio

# ``trio.SSLStream``'s private attributes used here.
_NEEDED = ("_ssl_object", "_outgoing", "_incoming", "_inner_send_lock", "_inner_recv_lock",
           "_delayed_outgoing", "_state", "_handshook")


class Direct:
    """Direct reads and writes on one link's stream (a ``trio.SSLStream`` over a
    ``trio.SocketStream``, or a ``trio.SocketStream``). Only one task reads (the link's
    reader); writes come from any task, never while another write is under way:
    ``write_now`` refuses while ``pending`` bytes of an earlier one are left, which the
    link's writer sends (``finish``) before anything else."""

    def __init__(self, stream: trio.abc.Stream, sock: Any) -> None:
        self.stream = stream
        self.tls: Any = stream if isinstance(stream, trio.SSLStream) else None
        self._sock = sock  # the trio socket under it
        #: Bytes already committed to the wire (encrypted) that the socket did not take.
        self.rest = b""
        self._finishing = False  # ``finish`` is sending

    @property
    def pending(self) -> bool:
        """Whether an earlier ``write_now`` left bytes for ``finish``."""
        return bool(self.rest)

    def _tls_idle(self) -> bool:
        tls = self.tls
        return (tls._state.name == "OK" and tls._handshook.done
                and tls._delayed_outgoing is None and not tls._inner_send_lock.locked()
                and not tls._outgoing.pending)

    def write_now(self, data: bytes | bytearray) -> bool:
        """Send ``data`` at once: True if it is on its way (written, or encrypted with a
        part left in ``rest`` for ``finish``); False if nothing was done (the caller
        sends it the ordinary way)."""
        fd = self._sock.fileno()
        if self.rest or self._finishing or fd < 0:
            return False
        tls = self.tls
        if tls is None:
            out: bytes | bytearray = data
        else:
            if not self._tls_idle():
                return False
            try:
                tls._ssl_object.write(data)
            except ssl.SSLError:
                return False  # the ordinary path meets the same error and reports it
            out = tls._outgoing.read()
        try:
            n = os.write(fd, out)
        except OSError:  # full (BlockingIOError), or broken: ``finish`` finds out
            n = 0
        if n < len(out):
            if tls is None and n == 0:
                return False
            self.rest = bytes(out[n:])
        return True

    async def finish(self) -> None:
        """Send what ``write_now`` left (the link's writer, before its own sends).
        Raises ``trio.BrokenResourceError`` as ``send_all`` does."""
        rest, self.rest = self.rest, b""
        if not rest:
            return
        self._finishing = True
        try:
            if self.tls is None:
                await self.stream.send_all(rest)
            else:
                await self._send_tls(rest)
        finally:
            self._finishing = False

    async def _send_tls(self, data: bytes) -> None:
        """Send bytes already encrypted, after anything trio's own code is sending."""
        tls = self.tls
        async with tls._inner_send_lock:
            try:
                await tls.transport_stream.send_all(data)
            except BaseException:
                tls._state = type(tls._state).BROKEN  # some of it went: the stream is done
                raise

    async def receive(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The next bytes from the peer (b"": it closed), as ``receive_some`` gives
        them, waiting only while there are none; other tasks get a turn when there
        were some at once. Raises ``trio.BrokenResourceError`` on a TLS error."""
        await trio.lowlevel.checkpoint_if_cancelled()
        size = max_bytes or 65_536
        waited = False
        fd = self._sock.fileno()
        while True:
            data = self._read_once(fd, size)
            if data is None:
                return await self.stream.receive_some(size)  # the ordinary way
            if data is not False:
                assert not isinstance(data, bool)
                if self.tls is not None and self.tls._outgoing.pending:
                    # TLS had something to say back while reading: send it now, in order.
                    await self._send_tls(self.tls._outgoing.read())
                elif not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            await trio.lowlevel.wait_readable(fd)
            waited = True

    def _read_once(self, fd: int, size: int) -> bytes | bytearray | bool | None:
        """What non-blocking steps give: data, False (nothing yet: wait), None (let
        ``SSLStream.receive_some`` do it: the end, or trio's own code is reading)."""
        tls = self.tls
        if tls is None:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                return False
            except OSError:
                return None
        if (tls._state.name != "OK" or not tls._handshook.done
                or tls._inner_recv_lock.locked() or tls._outgoing.pending or fd < 0):
            return None
        while True:
            try:
                data = tls._ssl_object.read(size)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                tls._state = type(tls._state).BROKEN
                raise trio.BrokenResourceError from exc
            else:
                return data if data else None
            if tls._outgoing.pending:
                return None  # it must send before it can read on: trio's way does that
            try:
                raw = os.read(fd, max(size, 16_384 + 256))
            except BlockingIOError:
                return False
            except OSError:
                return None
            if not raw:
                return None  # the end: receive_some reports it its way
            tls._incoming.write(raw)


def direct_for(stream: trio.abc.Stream) -> Direct | None:
    """A ``Direct`` for ``stream`` if it is a TLS or plain socket stream whose insides
    are as this module expects; None otherwise (in-memory streams in tests...)."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(inner, trio.SocketStream):
        return None
    if isinstance(stream, trio.SSLStream) and not (
            all(hasattr(stream, a) for a in _NEEDED)
            and hasattr(stream._handshook, "done") and hasattr(stream._inner_send_lock, "locked")
            and hasattr(stream._state, "name")):
        return None
    return Direct(stream, inner.socket)
