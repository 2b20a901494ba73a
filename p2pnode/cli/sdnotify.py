"""The systemd notification protocol (``sd_notify``): tell a supervisor we are ready.

When ``$NOTIFY_SOCKET`` is set (by systemd for ``Type=notify`` units, or by the
lab and the tests), the node sends ``READY=1`` once it listens and serves its
socket, and ``STOPPING=1`` when it starts to leave. Without it, nothing happens.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; return whether it was sent.

    Never raises: a missing or broken notification socket must not stop the node.
    """
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.sendto(state.encode(), path)
    except OSError:
        return False
    return True
