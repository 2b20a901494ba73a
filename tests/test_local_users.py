"""Other users of the same machine, played for real (as user ``nobody``): squatting the
default socket path, serving a socket of their own to catch what clients send, swapping
the node's key through its data directory. And a full disk where the key is written.

The squatting scenarios run in a private mount namespace with a fresh tmpfs on /tmp, so
they attack the real default path (``/tmp/p2pnode-0/...``) without touching the
machine's /tmp. Needs root (to be ``nobody`` and to mount), as in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pnode.client import BlockingClient, open_client
from p2pnode.config.settings import default_socket_path, private_socket_dir
from p2pnode.errors import ConfigError, UnsafePath, UntrustedServer
from p2pnode.identity.keys import NodeIdentity, private_key_pem
from p2pnode.identity.owners import ensure_private_dir
from p2pnode.node import Node

from .conftest import loopback_config
from .privatetmp import private_tmp_mounts
from .test_security import NOBODY, PYTHON_FOR_NOBODY, as_nobody

P2PNODE = [sys.executable, "-m", "p2pnode.cli"]
ROOT = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
needs_nobody_python = pytest.mark.skipif(not PYTHON_FOR_NOBODY,
                                         reason="no python3 that user nobody may run")
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs root and unshare(1) for a private /tmp")

# Runs inside the private mount namespace (a fresh tmpfs on /tmp), as root. argv: the
# attack, the Python that nobody runs. Prints one JSON object: what happened.
SCENARIO = r"""
import json, os, pwd, subprocess, sys, time
from pathlib import Path

case, nobody_python = sys.argv[1], sys.argv[2]
for var in ("XDG_RUNTIME_DIR", "P2PNODE_SOCKET", "P2PNODE_SERVER_USER"):
    os.environ.pop(var, None)
from p2pnode.config import default_socket_path
target = default_socket_path()
# Where to squat: the private directory of the default path, or the path itself.
spot = target.parent if target.parent.name.startswith("p2pnode-") else target
user = pwd.getpwnam("nobody")

def drop():
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)

def as_nobody(code, *args, **kw):
    return subprocess.Popen([nobody_python, "-c", code, *map(str, args)], preexec_fn=drop,
                            cwd="/", stdout=subprocess.PIPE, text=True, **kw)

SERVER = '''
import os, socket, sys
spot, target, log = sys.argv[1:4]
if spot != target:
    os.mkdir(spot, 0o755)
s = socket.socket(socket.AF_UNIX)
s.bind(target)
os.chmod(target, 0o666)
s.listen(8)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    got = conn.recv(65536)
    with open(log, "ab") as f:
        f.write(got)
    for line in got.splitlines():
        conn.sendall(b'{"ok":true,"msg_id":"' + b"f" * 32 + b'","peers":3}\\n')
    conn.close()
'''
os.mkdir("/tmp/root-private", 0o700)
attack = {
    "file": "open(__import__('sys').argv[1], 'w').write('squat')",
    "dir": "__import__('os').mkdir(__import__('sys').argv[1], 0o777)",
    "symlink": "__import__('os').symlink('/tmp/root-private', __import__('sys').argv[1])",
}
log = Path("/tmp/stolen.log")
server = None
if case == "socket":
    server = as_nobody(SERVER, spot, target, log)
    assert server.stdout.readline().strip() == "ready"
else:
    assert as_nobody(attack[case], spot).wait(timeout=20) == 0

p2pnode = [sys.executable, "-m", "p2pnode.cli"]
out = {"spot": str(spot), "target": str(target)}
node = subprocess.Popen([*p2pnode, "run", "--no-mdns", "--listen", "127.0.0.1:0",
                         "--data-dir", "/tmp/data", "--name", "victim"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    stdout, stderr = node.communicate(timeout=15)
    out["node"] = {"rc": node.returncode, "stderr": stderr}
except subprocess.TimeoutExpired:  # it started: where is its socket, whose is the path?
    node.terminate()
    stdout, stderr = node.communicate(timeout=15)
    out["node"] = {"rc": None, "stdout": stdout, "stderr": stderr}

if case == "socket":
    def send(*extra):
        res = subprocess.run([*p2pnode, "send", *extra, "secret"], capture_output=True,
                             text=True, timeout=30)
        return {"rc": res.returncode, "stdout": res.stdout, "stderr": res.stderr}
    out["send"] = send()
    out["stolen_before_trust"] = log.read_bytes().decode() if log.exists() else ""
    import trio
    from p2pnode.client import BlockingClient, open_client
    errors = []
    try:
        BlockingClient(timeout=5).close()
        errors.append("none")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    async def trio_client():
        client = await open_client()
        await client.aclose()
    try:
        trio.run(trio_client)
        errors.append("none")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    out["library"] = errors
    out["send_trusting"] = send("--server-user", "nobody")
    server.kill()
print(json.dumps(out))
"""


def run_scenario(case: str) -> dict[str, Any]:
    """Run SCENARIO for ``case`` in a private mount namespace with its own /tmp (empty but
    for the checkout and environment this test runs from, bound back in place)."""
    mount = private_tmp_mounts() + ' && exec "$0" "$@"'
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
         sys.executable, "-c", SCENARIO, case, PYTHON_FOR_NOBODY],
        capture_output=True, text=True, timeout=90, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    result: dict[str, Any] = json.loads(res.stdout.splitlines()[-1])
    return result


def one_error_line(stderr: str) -> str:
    """The CLI's error: one line, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("p2pnode: error: "), stderr
    return lines[0]


@needs_unshare
@needs_nobody_python
@pytest.mark.parametrize("case", ["file", "dir", "symlink"])
def test_a_squatted_default_path_is_refused_with_a_clear_message(case: str) -> None:
    """Another user takes the default socket path first: the node does not start there
    and says whose it is and what to do (before: a bare 'exists and is not a socket')."""
    out = run_scenario(case)
    assert out["node"]["rc"] == 1, out
    line = one_error_line(out["node"]["stderr"])
    assert out["spot"] in line
    assert "nobody (uid 65534)" in line  # who did it
    assert "rm " in line  # what to do
    assert "--socket" in line
    assert {"file": "is a file of nobody (uid 65534), not a directory",
            "dir": "is owned by nobody (uid 65534), not by you",
            "symlink": "is a symbolic link made by nobody (uid 65534)"}[case] in line
    assert out["target"] == "/tmp/p2pnode-0/p2pnode.sock"  # the private directory's socket


@needs_unshare
@needs_nobody_python
def test_another_users_live_socket_gets_nothing_from_clients() -> None:
    """Another user serves a socket at the default path and answers like a node. The
    node refuses to start; `p2pnode send` and both Python clients refuse to talk to it
    and send nothing (before: exit 0, a made-up msg id, the message stolen)."""
    out = run_scenario("socket")
    send = out["send"]
    assert send["rc"] == 1, send
    line = one_error_line(send["stderr"])
    assert f"the socket {out['target']} is served by nobody (uid 65534)" in line
    assert "nothing was sent" in line
    assert "--server-user nobody" in line
    assert send["stdout"] == ""
    assert out["stolen_before_trust"] == ""  # not even the request reached it
    for error in out["library"]:
        assert error.startswith("UntrustedServer: the socket"), error
    assert out["node"]["rc"] == 1, out
    assert "nobody (uid 65534)" in one_error_line(out["node"]["stderr"])
    # Trusting that user explicitly is the way to talk to a node run by another user.
    assert out["send_trusting"]["rc"] == 0, out["send_trusting"]
    assert out["send_trusting"]["stdout"].strip() == f"sent message {'f' * 32} to topic default"


# -- the clients' check, in process ---------------------------------------------------

SERVE_AS_NOBODY = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + "/other.sock")
os.chmod(sys.argv[1] + "/other.sock", 0o666)
s.listen(8)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    data = conn.recv(65536)
    if data:
        conn.sendall(b'{"ok":true,"name":"not-your-node"}\\n')
    conn.close()
"""


@needs_root
@needs_nobody_python
def test_clients_talk_to_another_user_only_when_told(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(short_tmp, 0o777)  # nobody may make its socket here
    monkeypatch.delenv("P2PNODE_SERVER_USER", raising=False)
    path = short_tmp / "other.sock"

    def drop() -> None:
        os.setgid(65534)
        os.setuid(65534)

    async def trio_client(server_user: str | None) -> str:
        with trio.fail_after(10):
            opening = (open_client(path) if server_user is None
                       else open_client(path, server_user=server_user))
            async with await opening as client:
                return str((await client.status())["name"])

    with subprocess.Popen([PYTHON_FOR_NOBODY, "-c", SERVE_AS_NOBODY, str(short_tmp)],
                          preexec_fn=drop, stdout=subprocess.PIPE, text=True,
                          cwd="/") as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            with pytest.raises(UntrustedServer, match="served by nobody") as info:
                trio.run(trio_client, None)
            assert info.value.uid == 65534
            assert info.value.path == str(path)
            with pytest.raises(UntrustedServer, match="nothing was sent"):
                BlockingClient(path, timeout=5)
            with pytest.raises(ConfigError, match="no user named"):
                BlockingClient(path, timeout=5, server_user="no-such-user-here")
            # Allowed by name, by uid, or through the environment.
            assert trio.run(trio_client, NOBODY) == "not-your-node"
            with BlockingClient(path, timeout=5, server_user=65534) as blocking:
                assert blocking.status()["name"] == "not-your-node"
            monkeypatch.setenv("P2PNODE_SERVER_USER", NOBODY)
            with BlockingClient(path, timeout=5) as blocking:
                assert blocking.status()["name"] == "not-your-node"
        finally:
            server.kill()


# -- the data directory and the key --------------------------------------------------

WRITE_KEY = """
import os, sys
fd = os.open(sys.argv[1] + "/node_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, os.environ["PEM"].encode())
"""


@needs_root
@needs_nobody_python
def test_another_user_cannot_swap_in_their_key(short_tmp: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a data directory they may write, another user plants their own key
    (before: the node took it and ran as their identity)."""
    os.chmod(short_tmp, 0o755)
    cfg = loopback_config(short_tmp, "a")
    cfg.data_dir.mkdir()
    os.chmod(cfg.data_dir, 0o777)
    theirs = NodeIdentity.generate()
    monkeypatch.setenv("PEM", private_key_pem(theirs).decode())
    assert as_nobody(WRITE_KEY, cfg.data_dir).returncode == 0
    monkeypatch.delenv("PEM")

    try:
        res = subprocess.run([*P2PNODE, "run", "--no-mdns", "--listen", "127.0.0.1:0",
                              "--socket", str(cfg.socket_path), "--data-dir",
                              str(cfg.data_dir)],
                             capture_output=True, text=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the node started, with the key another user planted")
    assert res.returncode == 1, res
    line = one_error_line(res.stderr)
    assert f"data directory {cfg.data_dir} is writable by group or others (mode 0777)" in line
    assert f"chmod go-w {cfg.data_dir}" in line

    os.chmod(cfg.data_dir, 0o755)  # the directory fixed, the planted key is still theirs
    with pytest.raises(UnsafePath, match=r"node key .*node_key is owned by nobody \(uid 65534\)"):
        Node(cfg)
    os.chown(cfg.data_dir / "node_key", 0, 0)  # the owner vouches for it: accepted
    assert Node(cfg).node_id == theirs.node_id


@needs_root
def test_a_data_directory_of_another_user_is_refused(short_tmp: Path) -> None:
    cfg = loopback_config(short_tmp, "a")
    cfg.data_dir.mkdir(mode=0o700)
    os.chown(cfg.data_dir, 65534, 65534)
    with pytest.raises(UnsafePath, match=r"owned by nobody \(uid 65534\), not by you"):
        Node(cfg)
    os.chown(cfg.data_dir, 0, 0)
    os.chmod(cfg.data_dir, 0o770)
    with pytest.raises(UnsafePath, match=r"writable by group or others \(mode 0770\)"):
        Node(cfg)
    os.chmod(cfg.data_dir, 0o750)  # readable by the group is fine
    assert not (cfg.data_dir / "node_key").exists()
    Node(cfg)
    assert (cfg.data_dir / "node_key").stat().st_mode & 0o777 == 0o600


# -- the private directory, in process ------------------------------------------------


def test_the_private_directory_is_made_0700_and_checked(short_tmp: Path) -> None:
    old = os.umask(0)
    try:
        ensure_private_dir(short_tmp / "p")
    finally:
        os.umask(old)
    assert (short_tmp / "p").stat().st_mode & 0o777 == 0o700
    ensure_private_dir(short_tmp / "p")  # ours and closed: used again
    os.chmod(short_tmp / "p", 0o750)  # e.g. opened up for --api-group: refused, with the fix
    with pytest.raises(UnsafePath, match=r"open to group or others \(mode 0750\).*chmod 700"):
        ensure_private_dir(short_tmp / "p")


def test_default_path_skips_a_runtime_dir_that_is_not_ours(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PNODE_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))
    assert default_socket_path() == short_tmp / "p2pnode.sock"
    if os.geteuid() == 0:
        os.chown(short_tmp, 65534, 65534)
        assert default_socket_path() == private_socket_dir() / "p2pnode.sock"
        os.chown(short_tmp, 0, 0)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path() == Path(f"/tmp/p2pnode-{os.geteuid()}/p2pnode.sock")


# -- a full disk ---------------------------------------------------------------------

FULL_DISK = """
set -e
mount -t tmpfs -o size=4k p2pfull "$1"
mkdir "$1/data"
dd if=/dev/zero of="$1/fill" bs=4096 count=8 2>/dev/null || true
set +e
"$2" -m p2pnode.cli run --no-mdns --listen 127.0.0.1:0 --socket "$3" --data-dir "$1/data"
echo "rc=$?"
"$2" -m p2pnode.cli keygen --network "$1/net.key"
echo "rc=$?"
ls -A "$1" "$1/data"
"""


@needs_unshare
def test_a_full_disk_names_the_key_file_and_leaves_no_temporary_file(short_tmp: Path) -> None:
    """A data directory on a full disk (a real one: a one-page tmpfs in a private mount
    namespace). Before: '[Errno 28] No space left on device' and a .node_key.PID.tmp."""
    disk = short_tmp / "disk"
    disk.mkdir()
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", FULL_DISK, "sh",
         str(disk), sys.executable, str(short_tmp / "a.sock")],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("rc=1") == 2, res
    node_err, keygen_err = res.stderr.strip().splitlines()
    assert node_err.startswith(f"p2pnode: error: cannot write node key {disk}/data/node_key: "
                               "No space left on device (could not write "), node_err
    assert keygen_err.startswith(f"p2pnode: error: cannot write network key {disk}/net.key: "
                                 "No space left on device"), keygen_err
    listing = res.stdout.split("rc=1\n")[-1]
    assert ".tmp" not in listing, listing
    assert "node_key" not in listing, listing
    assert "fill" in listing  # the listing is of the full disk
    assert not any(disk.iterdir())  # and that disk was never mounted out here
