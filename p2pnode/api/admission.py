"""Who may use the local API: the node's own user, and the members of ``--api-group``
(``SO_PEERCRED``); a refused client is told why before the connection closes."""

from __future__ import annotations

import grp
import os
import pwd

import trio

from ..identity.owners import peer_credentials
from .protocol import ApiError, encode_error


def admitted(stream: trio.SocketStream, group: grp.struct_group | None) -> bool:
    """Whether the connecting process runs as our user (or in the admitted group)."""
    try:
        cred = peer_credentials(stream.socket)
    except OSError:
        return False
    uid, gid = cred.uid, cred.gid
    if uid == os.geteuid():
        return True
    if group is None:
        return False
    if gid == group.gr_gid:
        return True
    try:
        return pwd.getpwuid(uid).pw_name in group.gr_mem
    except KeyError:
        return False


async def refuse_client(stream: trio.SocketStream, err: ApiError) -> None:
    """Tell a client why it is refused, then let it hang up (within a second): closing
    with its request unread would reset the connection before it reads the reason."""
    with trio.move_on_after(1):
        await stream.send_all(encode_error(err))
        await stream.send_eof()
        received = 0
        while received < 65536 and (data := await stream.receive_some(4096)):
            received += len(data)
