"""Event handlers: programs the node runs on member events (``p2pnode run --on-event
member_dead=/path/to/script``; docs/operations.md, "Event handlers").

A handler gets the event in its environment (``P2PNODE_EVENT``, ``P2PNODE_MEMBER_ID``,
``P2PNODE_MEMBER_NAME``, ``P2PNODE_MEMBER_STATE``, ``P2PNODE_MEMBER_TAGS`` as JSON,
``P2PNODE_MEMBER_ADDRS``) and as one JSON line on its standard input, the same
``{"event":..., "member":{...}}`` that the API's watchers get. Handlers run one at a
time, in the order of the events, each for at most ``event_timeout`` seconds (then its
process group is killed). Events wait in a queue of ``EVENT_QUEUE``; one that finds it
full is dropped, counted and logged. Every handler is checked when the node is built:
a known event kind, a program that exists and is executable.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections import deque
from typing import TYPE_CHECKING

import trio

from ..errors import ConfigError
from ..members import EVENT_KINDS
from .processes import end_process_group, feed_stdin

if TYPE_CHECKING:
    from ..config import NodeConfig
    from ..members import MemberInfo, Membership

__all__ = ["ALL_EVENTS", "EVENT_QUEUE", "EventHandlers", "handler_problem"]

log = logging.getLogger("p2pnode.handlers")
#: Events waiting for their handlers, at most.
EVENT_QUEUE = 64
#: The kind that takes every member event.
ALL_EVENTS = "member_*"
#: The bytes of a failing handler's standard error kept for the log.
STDERR_TAIL = 512


def handler_problem(kind: str, path: str) -> str | None:
    """Why handler ``path`` for events ``kind`` cannot run, or None."""
    if kind != ALL_EVENTS and kind not in EVENT_KINDS:
        return (f"{kind}={path}: unknown event {kind!r}; the events are "
                f"{', '.join(EVENT_KINDS)}, and {ALL_EVENTS} for all of them")
    if not os.path.exists(path):
        return f"{kind}={path}: no such file"
    if not os.path.isfile(path):
        return f"{kind}={path}: not a file"
    if not os.access(path, os.X_OK):
        return f"{kind}={path}: not executable (chmod +x {path})"
    return None


class EventHandlers:
    """The handlers of one node and their queue.

    Raises ``ConfigError`` if a handler cannot run (``handler_problem``).
    """

    def __init__(self, config: NodeConfig) -> None:
        for kind, path in config.event_handlers:
            if problem := handler_problem(kind, path):
                raise ConfigError(f"--on-event {problem}")
        self.config = config
        self._queue: deque[tuple[str, dict[str, str], bytes]] = deque()
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self.ran = 0  # handlers run to the end (any exit status)
        self.failed = 0  # ... that exited non-zero, or could not start
        self.timed_out = 0  # killed after event_timeout
        self.dropped = 0  # (handler, event) pairs that found the queue full

    def stats(self) -> dict[str, int]:
        """The counters of the ``handlers`` section of the status reply."""
        return {"configured": len(self.config.event_handlers), "queued": len(self._queue),
                "ran": self.ran, "failed": self.failed, "timed_out": self.timed_out,
                "dropped": self.dropped}

    def on_event(self, kind: str, member: MemberInfo) -> None:
        """A member event (``Membership`` listener): queue it for each handler of its kind."""
        paths = [p for k, p in self.config.event_handlers if k in (kind, ALL_EVENTS)]
        if not paths:
            return
        body = member.to_dict(trio.current_time())
        line = json.dumps({"event": kind, "member": body}, separators=(",", ":")) + "\n"
        env = {"P2PNODE_EVENT": kind, "P2PNODE_MEMBER_ID": body["node_id"],
               "P2PNODE_MEMBER_NAME": member.name, "P2PNODE_MEMBER_STATE": member.state,
               "P2PNODE_MEMBER_TAGS": json.dumps(member.tags, separators=(",", ":")),
               "P2PNODE_MEMBER_ADDRS": ",".join(member.addrs)}
        # Another member's name is its own text: no NUL, which no environment can hold.
        env = {k: v.replace("\0", "") for k, v in env.items()}
        for path in paths:
            if len(self._queue) >= EVENT_QUEUE:
                if not self.dropped % 100:  # the first drop, then every 100th
                    log.warning("event handler queue full (%d): %s for %s dropped, "
                                "%d dropped in all", EVENT_QUEUE, kind, path, self.dropped + 1,
                                extra={"member_event": kind, "handler": path})
                self.dropped += 1
                continue
            self._queue.append((path, env, line.encode()))
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._wake.set()

    async def run(self, membership: Membership) -> None:
        """Take ``membership``'s events and run their handlers one at a time, until
        cancelled."""
        remove = membership.add_listener(self.on_event)  # handlers may come with a reload
        try:
            await self._run_queued()
        finally:
            remove()

    async def _run_queued(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            path, env, data = self._queue.popleft()
            await self._run_one(path, env, data)

    async def wait_idle(self) -> None:
        """Wait until the queue is empty and no handler runs (tests, a stopping node)."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def _run_one(self, path: str, env: dict[str, str], data: bytes) -> None:
        event = env["P2PNODE_EVENT"]
        try:
            proc = await trio.lowlevel.open_process(
                [path], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env={**os.environ, **env}, start_new_session=True)
        except (OSError, ValueError) as exc:
            self.failed += 1
            log.warning("event handler %s for %s: cannot run it: %s", path, event,
                        getattr(exc, "strerror", None) or exc,
                        extra={"member_event": event, "handler": path})
            return
        stderr = b""
        try:
            with trio.move_on_after(self.config.event_timeout) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed_stdin, proc, data)
                    assert proc.stderr is not None
                    while chunk := await proc.stderr.receive_some(4096):
                        stderr = (stderr + chunk)[-STDERR_TAIL:]
                    await proc.wait()
        finally:
            await end_process_group(proc)
        self._report(path, event, proc.returncode, scope.cancelled_caught, stderr)

    def _report(self, path: str, event: str, code: int | None, timed_out: bool,
                stderr: bytes) -> None:
        extra = {"member_event": event, "handler": path}
        if timed_out:
            self.timed_out += 1
            log.warning("event handler %s for %s killed: still running after %gs", path, event,
                        self.config.event_timeout, extra=extra)
            return
        self.ran += 1
        if code != 0:
            self.failed += 1
            tail = stderr.decode("utf-8", "replace").strip().splitlines()
            log.warning("event handler %s for %s failed (%s)%s", path, event,
                        f"signal {-code}" if code is not None and code < 0
                        else f"exit status {code}", f": {tail[-1][:200]}" if tail else "",
                        extra=extra)
