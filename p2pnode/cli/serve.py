"""``p2pnode request`` and ``p2pnode serve``: request/reply from the command line
(docs/cli.md). ``serve`` answers each request with a command, as a Serf query handler
does: the request's data on its standard input, its standard output the reply, within
bounds of time and output; a command that fails answers with an error reply."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
from typing import Any

import trio

from ..client import ApiReplyError, Client, ReplyError, event_payload, open_client
from ..client.serving import reply_request, request_token
from ..errors import P2PError
from ..node.processes import end_process_group, feed_stdin

#: The most bytes of standard input ``request`` sends as its data.
MAX_STDIN = 512 * 1024
#: The most bytes of a failing command's standard error kept for its error reply.
STDERR_TAIL = 512


async def cmd_request(args: argparse.Namespace) -> int:
    """Send a request and print its replies; 1 when none came (or only errors)."""
    if args.max_replies < 1:
        raise P2PError("--max-replies must be at least 1")
    data: str | bytes = " ".join(args.text) if args.text else await _read_stdin()
    async with open_client(args.socket, server_user=args.server_user) as client:
        replies = await client.ask(args.topic, data, timeout=args.timeout,
                                   max_replies=args.max_replies)
    for reply in replies:
        print(json.dumps(reply) if args.json else reply_line(reply), flush=True)
    if not replies:
        print(f"p2pnode: no reply on {args.topic!r} within {args.timeout:g}s",
              file=sys.stderr)
        return 1
    return 0 if any("error" not in reply for reply in replies) else 1


def reply_line(reply: dict[str, Any]) -> str:
    """One reply as ``NAME: DATA`` (or ``NAME: error: TEXT``); one final newline of the
    data is left out (a command's output usually ends with one)."""
    name = reply.get("name") or str(reply.get("from", "?"))[:8]
    if "error" in reply:
        return f"{name}: error: {reply['error']}"
    text = event_payload(reply).decode("utf-8", "backslashreplace")
    return f"{name}: {text.removesuffix(chr(10))}"


async def _read_stdin() -> bytes:
    data = bytearray()
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while chunk := await stdin.receive_some(65536):
            data += chunk
            if len(data) > MAX_STDIN:
                raise P2PError(f"the request's data (standard input) is over {MAX_STDIN} "
                               "bytes")
    return bytes(data)


async def cmd_serve(args: argparse.Namespace) -> int:
    """Answer the requests on a topic with a command until Ctrl-C, the node's end, or
    ``--count`` requests."""
    if not args.argv:
        raise P2PError("give the command to run after --, e.g. p2pnode serve -- cat")
    if not args.command_timeout > 0 or args.max_output < 1 or args.concurrency < 1:
        raise P2PError("--command-timeout must be over 0, --max-output and --concurrency "
                       "at least 1")
    if args.count is not None and args.count < 1:
        raise P2PError("--count must be at least 1")
    async with open_client(args.socket, server_user=args.server_user) as client:
        await client.subscribe([args.topic])
        print(f"p2pnode: serving {args.topic!r} with {shlex.join(args.argv)}",
              file=sys.stderr, flush=True)
        slots = trio.Semaphore(args.concurrency)
        taken = 0
        async with trio.open_nursery() as nursery:
            async for event in client.events():
                token = request_token(event)
                if token is None:
                    continue
                came = trio.current_time()
                await slots.acquire()
                nursery.start_soon(_answer, client, args, event, token, came, slots.release)
                taken += 1
                if args.count is not None and taken >= args.count:
                    return 0
    print("p2pnode: the node closed the connection", file=sys.stderr)
    return 1


async def _answer(client: Client, args: argparse.Namespace, event: dict[str, Any], token: str,
                  came: float, release: Any) -> None:
    who = f"request {event.get('msg_id', '?')} from {str(event.get('origin', '?'))[:8]}"
    try:
        timeout = float(event.get("timeout") or 0)
        if timeout and trio.current_time() - came >= timeout:
            print(f"p2pnode: {who}: skipped, its timeout passed while it waited its turn",
                  file=sys.stderr, flush=True)
            return
        result: bytes | ReplyError = ReplyError(
            f"the command did not finish within {args.command_timeout:g}s")
        with trio.move_on_after(args.command_timeout):
            result = await run_command(args.argv, event, args.max_output)
        what = (f"error: {result}" if isinstance(result, ReplyError)
                else f"answered, {len(result)} bytes")
        try:
            await client.request(reply_request(token, result))
        except ApiReplyError as err:
            what = f"reply refused: {err.message}"
        print(f"p2pnode: {who}: {what}", file=sys.stderr, flush=True)
    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the node went: cmd_serve says so
    finally:
        release()


async def run_command(command: list[str], event: dict[str, Any],
                      max_output: int) -> bytes | ReplyError:
    """Run ``command`` for one request event: its data on standard input, and
    ``P2PNODE_TOPIC``, ``P2PNODE_ORIGIN``, ``P2PNODE_MSG_ID`` in the environment.
    Returns its standard output, or a ``ReplyError`` saying why it failed (it could not
    start, exited non-zero, wrote over ``max_output`` bytes). The command runs in a
    process group of its own, killed on the way out, cancellation included (the
    caller's timeout)."""
    env = {**os.environ, "P2PNODE_TOPIC": str(event.get("topic", "")),
           "P2PNODE_ORIGIN": str(event.get("origin", "")),
           "P2PNODE_MSG_ID": str(event.get("msg_id", ""))}
    try:
        proc = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, start_new_session=True)
    except OSError as exc:
        return ReplyError(f"cannot run {command[0]}: {exc.strerror or exc}")
    out = _Output(max_output)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed_stdin, proc, event_payload(event))
            nursery.start_soon(out.read_stderr, proc)
            await out.read_stdout(proc)
            if out.too_much:
                nursery.cancel_scope.cancel()
                return ReplyError(f"the command wrote more than {max_output} bytes")
            await proc.wait()
    finally:
        await end_process_group(proc)
    code = proc.returncode
    if code != 0:
        status = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        tail = out.stderr_tail()
        return ReplyError(f"the command failed ({status})" + (f": {tail}" if tail else ""))
    return bytes(out.stdout)


class _Output:
    """A command's standard output (up to a limit) and the end of its standard error."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stdout = bytearray()
        self.stderr = b""
        self.too_much = False

    async def read_stdout(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.receive_some(65536):
            self.stdout += chunk
            if len(self.stdout) > self.limit:
                self.too_much = True
                return

    async def read_stderr(self, proc: trio.Process) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while chunk := await proc.stderr.receive_some(65536):
                self.stderr = (self.stderr + chunk)[-STDERR_TAIL:]

    def stderr_tail(self) -> str:
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:200] if lines else ""
