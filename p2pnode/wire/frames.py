"""Length-prefixed frames: a 4-byte big-endian body length, then the body.

The declared length is checked against the maximum as soon as the 4 header
bytes are in, before any of the body is kept.
"""

from __future__ import annotations

import struct

from ..errors import LocalError, RemoteProtocolError

HEADER = struct.Struct(">I")
HEADER_LEN = HEADER.size


def encode_frame(body: bytes) -> bytes:
    """Return ``body`` with its length prefix."""
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Feed bytes in, get complete frame bodies out.

    ``feed`` parses every complete frame of the data given so far, so one large
    read yields many frames at once. Raises ``RemoteProtocolError("too_large")``
    when a header declares more than ``max_frame`` bytes; after that the decoder
    is unusable (the framing of the stream is lost) and the link must be closed.
    """

    def __init__(self, max_frame: int) -> None:
        if max_frame < 1:
            raise LocalError("max_frame must be at least 1")
        self._max = max_frame
        self._buf = bytearray()
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add ``data`` and return the bodies of all frames now complete, in order."""
        if self._broken:
            raise LocalError("decoder used after a framing error")
        buf = self._buf
        if data:
            buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_LEN:
            (length,) = unpack(buf, pos)
            if length > self._max:
                self._broken = True
                self._buf = bytearray()
                raise RemoteProtocolError(
                    "too_large", f"frame of {length} bytes exceeds the limit of {self._max}"
                )
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            frames.append(bytes(buf[pos + HEADER_LEN : stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return frames
