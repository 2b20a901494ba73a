"""The layers of docs/architecture.md: the pure core (wire/, gossip/, mesh/, the key pair,
api/protocol.py, the settings and the value modules) loads neither trio nor zeroconf;
package ``__init__`` files load only what their names need; and no module imports a
layer above its own."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "p2pnode"


def _modules_in(*packages: str) -> list[str]:
    """Every module of ``packages`` (their ``__init__`` included), by dotted name."""
    names = []
    for package in packages:
        for path in sorted((PACKAGE / package).glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            names.append(f"p2pnode.{package}{stem}")
    return names


#: The pure core: no I/O, no trio, no zeroconf. Every module of wire/, gossip/ and mesh/
#: (new ones are checked without being listed here), and these.
PURE = [
    "p2pnode", "p2pnode.errors", "p2pnode.ids", "p2pnode.ratelimit",
    "p2pnode.config", "p2pnode.config.settings", "p2pnode.config.tags",
    *_modules_in("wire", "gossip", "mesh", "members"),
    "p2pnode.identity.keypair", "p2pnode.api.protocol", "p2pnode.api.member_requests",
    "p2pnode.api.status",
    "p2pnode.api.topics",
]
#: Packages whose ``__init__`` must stay light although some of their modules are not:
#: their names load on first use.
LIGHT_PACKAGES = ["p2pnode.api", "p2pnode.discovery", "p2pnode.identity", "p2pnode.config"]
HEAVY = ["trio", "zeroconf"]

# argv: the repository root, the heavy packages (comma-separated), then the modules to import.
PROBE = """
import importlib, json, sys
root, heavy, modules = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
sys.path.insert(0, root)
for name in modules:
    importlib.import_module(name)
print(json.dumps({"imported": [n for n in modules if n in sys.modules],
                  "loaded": sorted(m for m in sys.modules
                                   if any(m == h or m.startswith(h + ".") for h in heavy))}))
"""


def imports_in_fresh_interpreter(modules: list[str],
                                 heavy: list[str] = HEAVY) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(ROOT), ",".join(heavy), *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_pure_core_does_not_load_trio_or_zeroconf() -> None:
    assert "p2pnode.wire" in PURE
    assert "p2pnode.gossip.router" in PURE
    result = imports_in_fresh_interpreter(PURE)
    assert result["imported"] == PURE
    assert [m for m in result["loaded"] if m.split(".")[0] in HEAVY] == []


@pytest.mark.parametrize("module", PURE)
def test_each_pure_module_alone(module: str) -> None:
    assert imports_in_fresh_interpreter([module])["loaded"] == []


def test_the_probe_detects_trio() -> None:
    # Control: an adapter module does load trio, so the check above can fail.
    assert "trio" in imports_in_fresh_interpreter(["p2pnode.net.outqueue"])["loaded"]


@pytest.mark.parametrize("package", LIGHT_PACKAGES)
def test_a_package_loads_its_heavy_modules_on_first_use(package: str) -> None:
    assert imports_in_fresh_interpreter([package])["loaded"] == []


def test_the_signing_core_does_not_load_key_files_or_x509() -> None:
    # gossip/signing.py needs the key pair only; key files and certificates stay out.
    heavy = ["cryptography.x509", "p2pnode.identity.keys"]
    result = imports_in_fresh_interpreter(["p2pnode.gossip", "p2pnode.gossip.signing"], heavy)
    assert result["loaded"] == []
    loaded = imports_in_fresh_interpreter(["p2pnode.identity.keys"], heavy)["loaded"]
    assert set(heavy) <= set(loaded)  # control


def test_the_client_does_not_load_the_node() -> None:
    # Apps import p2pnode.client: neither the node, its links nor X.509 (msgspec, yes:
    # the clients parse each read's events in bulk with it).
    heavy = ["p2pnode.node", "p2pnode.net", "cryptography", "nacl"]
    assert imports_in_fresh_interpreter(["p2pnode.client"], heavy)["loaded"] == []


#: The layers, bottom up (docs/architecture.md). A module may import its own layer and
#: those below, never one above.
LAYERS = [
    {"errors", "ids", "ratelimit", "config"},  # values, the error tree, every limit
    {"wire", "identity", "mesh"},  # the pure wire protocol, who a node is, the mesh view
    {"gossip", "members"},  # the pure gossip core, the member list
    {"net", "discovery", "api", "store"},  # the trio adapters and the store on disk
    {"node"},  # the composition root
    {"cli", "client", "testing"},  # on top: the command, the clients, the test helpers
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def _imported_parts(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, first part under p2pnode) of every p2pnode import in ``path``."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # ("p2pnode", "net")
    found = []
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            target = [*base, *(node.module or "").split(".")]
            if target[0] != "p2pnode":
                continue
            if len(target) > 1 and target[1]:
                found.append((node.lineno, target[1]))
            else:  # from .. import x: x may be a module
                found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1]) for alias in node.names
                      if alias.name.startswith("p2pnode.")]
    return found


def test_no_module_imports_a_higher_layer() -> None:
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if p.name not in ("__init__.py", "__main__.py", "__pycache__")}
    assert top == set(RANK), "a new package or module: give it a layer in LAYERS"
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] in ("__init__", "__main__"):
            continue
        for line, target in _imported_parts(path):
            if target in RANK and RANK[target] > RANK[parts[0]]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_the_layer_check_sees_relative_imports() -> None:
    # Control: the parser resolves the forms the package uses.
    src = "from ..cli.logs import f\nfrom .protocol import g\nfrom .. import node\n"
    assert _imported_parts(PACKAGE / "api" / "x.py", src) == [(1, "cli"), (2, "api"),
                                                             (3, "node")]
