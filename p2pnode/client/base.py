"""What the three clients share besides their protocol core (``protocol``): the
counters they show and the checks before and after their calls."""

from __future__ import annotations

from .protocol import ClientProtocol, ConnectionClosed


class ClientBase:
    """What the three clients share (a mixin: the attributes are the client's): their
    counters, and the checks before each call (closed here, a refusal not raised yet, a
    broken connection, the node's end of it; the trio client raises trio's exceptions
    instead)."""

    _proto: ClientProtocol
    _closed: bool
    _broken: BaseException | None
    close_timeout: float

    @property
    def events_dropped(self) -> int:
        """Events dropped because more than ``max_pending`` waited to be read."""
        return self._proto.events_dropped

    @property
    def unacknowledged(self) -> int:
        """Requests sent (or queued) that the node has not answered yet."""
        return self._proto.unacked

    def _check_closed(self, ended: type[Exception] = ConnectionClosed,
                      too_slow: type[Exception] = TimeoutError) -> None:
        """After closing: what the application must still learn (a refusal not raised
        yet, publishes the node never confirmed: ``ended``, replies still missing at
        the timeout: ``too_slow``)."""
        err = self._proto.pop_error()
        if err is not None:
            raise err
        if self._proto.lost:
            raise ended(self._proto.eof_message())
        if self._broken is None and not self._proto.eof and self._proto.unacked:
            raise too_slow(f"{self._proto.unacked} requests were not answered "
                           f"within {self.close_timeout}s; closed anyway")

    def _check(self) -> None:
        if self._closed:
            raise ConnectionClosed("this client is closed")
        err = self._proto.pop_error()
        if err is not None:
            raise err
        self._check_alive()

    def _check_alive(self) -> None:
        if self._broken is not None:
            raise ConnectionError(f"the connection to the node broke: {self._broken}") \
                from self._broken
        if self._proto.eof:
            raise ConnectionClosed(self._proto.eof_message())
