"""Child processes that the node and the command run for a bounded time (event
handlers, ``p2pnode serve``'s commands): each in a process group of its own, fed its
input, and killed with all it started when its time is up."""

from __future__ import annotations

import contextlib
import os
import signal

import trio

__all__ = ["end_process_group", "feed_stdin"]


async def feed_stdin(proc: trio.Process, data: bytes) -> None:
    """Write ``data`` to the process's standard input, then close it (a process that
    does not read it, or exits first, is no error)."""
    assert proc.stdin is not None
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await proc.stdin.send_all(data)
    await trio.aclose_forcefully(proc.stdin)


async def end_process_group(proc: trio.Process) -> None:
    """Kill what is left of the process's group (it was started with
    ``start_new_session``), reap the process and close its pipes; shielded from
    cancellation, so that nothing is left behind on the way out."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with trio.CancelScope(shield=True):
        with trio.move_on_after(5):
            await proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                await trio.aclose_forcefully(pipe)
