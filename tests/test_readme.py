"""README.md's shell blocks, run as they stand, in the shell its set-up leaves.

Every ```sh block of README.md carries a `<!-- tested: NAME -->` mark, and each mark
has its check here (a new block without one fails `test_every_readme_shell_block_is_tested`):

- setup: the set-up command, in a shell in a "clone" whose `.venv` is this test run's
  environment; only `python3 -m venv` and `pip` are stubbed out (.ci/run installs for
  real). Every later block runs after it, in the same shell, so `p2pnode` and
  `python3` must work as README prints them.
- tests: what .ci/run runs (it installs and runs the tests as README says).
- quickstart: as it stands, in private network, mount (a tmpfs on /tmp: its fixed
  ports and paths collide with nothing) and pid namespaces: when the shell ends,
  every process it started ends with it.
- keygen, join, peer: two machines, 192.168.1.9 and 192.168.1.10, as network
  namespaces joined by a bridge (scripts/netlab.py), each with its own home and
  runtime directory; `scp` copies to the other machine's home. mDNS runs only there.
- script, python: tests/test_docs.py and tests/test_client_docs.py run them.
- scripts: each simulate.py command is checked (its settings, its --plot path) but
  not run (a minute each; tests/test_simulate.py runs the simulator), bench.py's
  flags are checked with --help.

The namespace checks need root, unshare(1) and iproute2, and are skipped without them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from scripts.netlab import Lab, environment_problem

from .privatetmp import private_tmp_mounts
from .test_cli import Proc, reap

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKED = re.compile(r"(?:<!-- tested: (\w+) -->\n)?```(\w+)\n(.*?)```", re.S)
CHECKED = {"setup", "tests", "quickstart", "keygen", "join", "peer", "script", "scripts"}
# ("script" is README's socket example, run by tests/test_docs.py.)
ACTIVATE = Path(sys.prefix) / "bin" / "activate"
needs_namespaces = pytest.mark.skipif(
    environment_problem() is not None or shutil.which("unshare") is None
    or not ACTIVATE.exists(),
    reason=f"needs root, iproute2, unshare(1) and a virtual environment "
           f"({environment_problem() or 'not in a venv'})")


def sh_blocks() -> dict[str, str]:
    """README's shell blocks by mark (an unmarked one under ``None``)."""
    out: dict[str, str] = {}
    for mark, lang, body in MARKED.findall(README.read_text()):
        if lang == "sh":
            assert mark not in out, f"two blocks marked {mark}"
            out[mark or ""] = body
    return out


def test_every_readme_shell_block_is_tested() -> None:
    blocks = sh_blocks()
    assert "" not in blocks, f"a README sh block has no <!-- tested: --> mark: {blocks['']}"
    assert set(blocks) == CHECKED, set(blocks) ^ CHECKED


def test_the_ci_runs_readmes_test_command() -> None:
    (command,) = sh_blocks()["tests"].strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text()
    quiet = command.replace("pip install", "pip install -q")
    assert quiet in ci.splitlines(), f".ci/run should run README's: {quiet}"


def shell_after_setup(clone: Path) -> str:
    """The shell lines that put a user where README's set-up leaves them, in ``clone``
    (whose ``.venv`` is this run's environment): README's set-up command with only
    the making of the environment and the installing stubbed out."""
    clone.mkdir(exist_ok=True)
    (clone / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return "\n".join([
        f"cd {shlex.quote(str(clone))}",
        'python3() { if [ "$1 $2" = "-m venv" ]; then return 0; fi; command python3 "$@"; }',
        "pip() { return 0; }",
        setup_without_run(),
        "unset -f python3 pip",
    ])


RUN = " && p2pnode run"


def setup_without_run() -> str:
    """README's set-up command without its last step, running a node (which
    ``test_setup_runs_a_node`` checks)."""
    setup = sh_blocks()["setup"].strip()
    assert setup.endswith(RUN), f"README's set-up should end by running a node: {setup}"
    return setup[: -len(RUN)]


@needs_namespaces
async def test_setup_runs_a_node(short_tmp: Path) -> None:
    """The whole set-up command, as printed, runs a node with the defaults (mDNS on):
    in private network (only loopback), mount (/tmp, the home) and pid namespaces."""
    home = short_tmp / "home"  # under /tmp: the node writes in the namespace's tmpfs
    home.mkdir()
    clone = short_tmp / "clone"
    script = "\n".join([shell_after_setup(clone).replace(f"cd {shlex.quote(str(clone))}", ""),
                        "p2pnode run"])  # what ``setup_without_run`` left out
    # The clone is the working directory, opened before the tmpfs covers /tmp.
    inner = f"ip link set lo up && {private_tmp_mounts()} && exec bash -c \"$0\""
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork",
            "--mount-proc", "sh", "-c", f"cd {shlex.quote(str(clone))} && {inner}", script]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "P2PNODE_SOCKET", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")}
    env.update(PATH="/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin", HOME=str(home))
    proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            start_new_session=True)
    try:
        with trio.fail_after(30):
            out = Proc(proc, proc.stdout)
            await out.wait_line(r"listening on .*, socket /tmp/p2pnode-\d+/p2pnode\.sock")
            await out.wait_line(r"open network: links are encrypted \(TLS 1\.3\)")
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to the terminal's foreground group
            assert await proc.wait() == 0
        assert "Traceback" not in "\n".join(out.seen)
    finally:
        await reap(proc)


@needs_namespaces
async def test_setup_leaves_p2pnode_and_python_usable(short_tmp: Path) -> None:
    script = shell_after_setup(short_tmp) + "\ncommand -v p2pnode python3\n" \
        "python3 -c 'import p2pnode.client'\np2pnode --version\n"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # as in a new terminal: no venv on PATH
    with trio.fail_after(30):
        # In a network namespace of its own: whatever the set-up runs stays there.
        res = await trio.run_process(["unshare", "--net", "bash", "-euc", script], env=env,
                                     capture_stdout=True, capture_stderr=True, check=False)
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    assert lines[0] == str(Path(sys.prefix) / "bin" / "p2pnode")
    assert lines[1].startswith(str(Path(sys.prefix) / "bin" / "python3"))
    assert re.fullmatch(r"p2pnode \S+", lines[2])


@needs_namespaces
async def test_quickstart_runs_as_it_stands(short_tmp: Path) -> None:
    script = "\n".join([
        shell_after_setup(short_tmp),
        sh_blocks()["quickstart"],
        "read -r _            # the test checks the output meanwhile",
        "kill %1 %2           # README: stop the nodes",
        "wait",
    ])
    # A private /tmp (README's paths), network (its ports) and pid namespace (its
    # processes end with the shell). The clone is the working directory, opened
    # before the tmpfs covers /tmp.
    inner = f"ip link set lo up && {private_tmp_mounts()} && exec bash -c \"$0\""
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--pid", "--fork",
            "--mount-proc", "sh", "-c", f"cd {shlex.quote(str(short_tmp))} && {inner}",
            script]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "P2PNODE_SOCKET")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"
    proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(30):
            out = Proc(proc, proc.stdout)
            await out.wait_line(r"\sa\s+127\.0\.0\.1:7001\s")  # peers: b linked to a
            await out.wait_line("^p2pnode: subscribed to chat$")
            sent = await out.wait_line(r"^sent message ([0-9a-f]{32}) to topic chat$")
            await out.wait_line("^chat\ta\thello from a$")
            assert proc.stdin is not None
            await proc.stdin.send_all(b"\n")
            await out.wait_line("^p2pnode: error: node at /tmp/b.sock stopped ")
            assert await proc.wait() == 0
        assert sent.group(1)
        text = "\n".join(out.seen)
        assert "Traceback" not in text
        assert "open network: links are encrypted (TLS 1.3), but any node may join" in text
    finally:
        await reap(proc)


class Machines:
    """The two machines of README's "Two machines": lab hosts h2 (machine 1,
    192.168.1.10) and h1 (machine 2, 192.168.1.9), each with its own home and runtime
    directory, running README's commands after its set-up."""

    def __init__(self, lab: Lab, setup: str) -> None:
        self.lab, self.setup = lab, setup
        self.procs: list[trio.Process] = []

    def home(self, machine: int) -> Path:
        return self.lab.host_dir(self.host(machine)) / "home"

    @staticmethod
    def host(machine: int) -> str:
        return "h2" if machine == 1 else "h1"

    async def start(self, machine: int, commands: str) -> Proc:
        """Start ``commands`` on a machine, in a shell after README's set-up."""
        host = self.host(machine)
        run = self.lab.host_dir(host) / "run"
        for d in (self.home(1), self.home(2), run):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        other = shlex.quote(str(self.home(1)))
        scp = f'scp() {{ [ "${{2%%:*}}" = 192.168.1.10 ] && cp -p "$1" {other}/"${{2#*:}}"; }}'
        env = {k: v for k, v in self.lab.env(host).items()
               if not k.startswith("P2PNODE_") and k != "VIRTUAL_ENV"}
        env |= {"HOME": str(self.home(machine)), "XDG_RUNTIME_DIR": str(run),
                "PATH": "/usr/local/bin:/usr/bin:/bin"}
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", self.lab.netns(host), "bash", "-c",
             f"{self.setup}\n{scp}\n{commands}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return Proc(proc, proc.stdout)

    async def stop(self, proc: Proc) -> int:
        """SIGTERM to what ``start`` started (its own process group); its status."""
        if proc.process.returncode is None:
            os.killpg(proc.process.pid, signal.SIGTERM)
        return await proc.process.wait()

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await reap(proc)


@asynccontextmanager
async def two_machines(clone: Path, lab_dir: Path) -> AsyncIterator[Machines]:
    lab = Lab(hosts=2, prefix=f"p2pt-{uuid.uuid4().hex[:8]}", subnet="192.168.1.8/29",
              lab_dir=lab_dir, start_nodes=False)
    await trio.to_thread.run_sync(lab.create)
    machines = Machines(lab, shell_after_setup(clone))
    try:
        assert lab.addr("h2") == "192.168.1.10"
        yield machines
    finally:
        with trio.CancelScope(shield=True):
            await machines.close()
            await trio.to_thread.run_sync(lab.destroy)


@pytest.mark.netns
@needs_namespaces
async def test_two_machines_run_as_they_stand(short_tmp: Path) -> None:
    blocks = sh_blocks()
    with trio.fail_after(60):
        async with two_machines(short_tmp / "clone", short_tmp / "lab") as m:
            keygen = await m.start(2, blocks["keygen"])  # on one machine; scp to the other
            await keygen.wait_line("wrote network key")
            status = await keygen.process.wait()
            assert status == 0, keygen.seen
            tag = (await keygen.wait_line(r"wrote network key .* \(network (\w+)\)")).group(1)
            assert (m.home(1) / "p2pnode-network.key").stat().st_mode & 0o777 == 0o600
            # On machine 1 and on machine 2: they find each other by mDNS.
            nodes = [await m.start(k, blocks["join"]) for k in (1, 2)]
            for node in nodes:
                await node.wait_line(f"network {tag}: links are encrypted and admit only "
                                     "members")
                await node.wait_line("link up: ")
            # The default socket: the client commands need no --socket.
            recv = await m.start(1, "p2pnode recv --topic chat --count 1")
            await recv.wait_line("subscribed to chat")
            sent = await m.start(2, "p2pnode send --topic chat hello from machine 2")
            assert await sent.process.wait() == 0
            await recv.wait_line(r"^chat\t\S+\thello from machine 2$")
            assert await recv.process.wait() == 0
            # Machine 2 names machine 1 (where multicast does not get through).
            assert await m.stop(nodes[1]) == 0
            peer = await m.start(2, blocks["peer"])
            await peer.wait_line(f"network {tag}: ")
            await peer.wait_line(r"link up: \S+ \(\w+\) out 192\.168\.1\.10:7420")
            for proc in (nodes[0], peer):
                assert await m.stop(proc) == 0
                assert not any("Traceback" in line for line in proc.seen)


def load_simulate() -> object:
    from .test_simulate import sim

    return sim


def test_readmes_script_commands_are_valid(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sim = load_simulate()
    monkeypatch.chdir(tmp_path)  # where --plot mesh.png would go
    commands = [line for line in sh_blocks()["scripts"].splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 7
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "python3", line  # the environment's, after the set-up
        script, args = argv[1], argv[2:]
        assert (ROOT / script).is_file(), script
        if script.endswith("simulate.py"):
            sim.parse_args(args)  # type: ignore[attr-defined]  # exits 2 if refused
        else:
            res = subprocess.run([sys.executable, str(ROOT / script), *args, "--help"],
                                 capture_output=True, text=True, timeout=60, check=False)
            assert res.returncode == 0, res.stderr
    assert not (tmp_path / "mesh.png").exists()  # checked, not drawn
    assert importlib.util.find_spec("matplotlib") is not None
