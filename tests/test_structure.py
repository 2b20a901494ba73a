"""The shape of the code: module and function sizes, what the top of the package holds,
that ``python -m p2pnode`` works, and that scripts/ and examples/ use only public names.

The limits are the house rules (docs/architecture.md, "Layers"): a module over 500 lines
or a function over 60 has more than one job; split it rather than raise the limit.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "p2pnode"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
#: The small modules allowed at the top of the package, beside the packages.
TOP_MODULES = {"errors.py", "ids.py", "ratelimit.py"}
MAX_TOP_MODULE_LINES = 100

#: The composition root stays small: the work lives in the modules named after it.
MAX_NODE_CLASS_LINES = 200


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def functions(path: Path) -> list[tuple[str, int]]:
    """Every function and method in ``path`` (nested ones too) with its length in lines,
    from its ``def`` to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_module_is_too_long() -> None:
    long = {name(p): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_too_long() -> None:
    long = {f"{name(p)}:{fn}": n for p in modules() for fn, n in functions(p)
            if n > MAX_FUNCTION_LINES}
    assert long == {}


def test_the_node_only_composes() -> None:
    tree = ast.parse((PACKAGE / "node" / "node.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Node")
    lines = (node.end_lineno or node.lineno) - node.lineno + 1
    assert lines <= MAX_NODE_CLASS_LINES, lines


def test_the_measures_catch_a_long_function(tmp_path: Path) -> None:
    # Control: the function measure sees nested and async functions, and counts every line.
    src = tmp_path / "m.py"
    body = "\n".join(f"        x{i} = {i}" for i in range(61))
    src.write_text(f"class C:\n    async def f(self):\n{body}\n")
    assert functions(src) == [("f", 62)]


def test_the_top_level_holds_packages_and_a_few_small_modules() -> None:
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py"}
    assert files - {"__init__.py", "__main__.py"} <= TOP_MODULES
    for module in TOP_MODULES & files:
        lines = len((PACKAGE / module).read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_TOP_MODULE_LINES, module
    dirs = [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert dirs
    for d in dirs:
        assert (d / "__init__.py").is_file(), f"{d.name}/ is not a package"
    other = [p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix not in (".py",)]
    assert other == []


def test_python_m_p2pnode_runs_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "p2pnode", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: p2pnode")
    for command in ("run", "send", "recv", "peers", "status", "monitor", "mesh", "keygen"):
        assert command in proc.stdout


#: The public modules: the package, its packages and its top-level modules.
PUBLIC = ["p2pnode", *sorted(
    f"p2pnode.{p.stem if p.is_file() else p.name}" for p in PACKAGE.iterdir()
    if (p.is_dir() and (p / "__init__.py").exists())
    or (p.suffix == ".py" and not p.name.startswith("__")))]


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_module_declares_its_names(module: str) -> None:
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names, f"{module} has no __all__"
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def p2pnode_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every import from p2pnode in ``path``, at any depth;
    ``import p2pnode.x.y`` gives the name ``""``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "p2pnode" or node.module.startswith("p2pnode.")):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names
                      if alias.name.startswith("p2pnode.")]
    return found


SCRIPTS = sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "examples").glob("*.py")])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_and_examples_use_only_public_names(path: Path) -> None:
    wrong = []
    for line, module, name in p2pnode_imports(path):
        where = f"{path.name}:{line}: {module}"
        if module not in PUBLIC:
            wrong.append(f"{where} is not a public module (import from its package)")
        elif name not in importlib.import_module(module).__all__:
            wrong.append(f"{where} has no public name {name!r}")
    assert wrong == []


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    # Control: nested imports and submodules are found.
    src = tmp_path / "s.py"
    src.write_text("import p2pnode.net.link\n"
                   "def f():\n    from p2pnode.wire.messages import Ping\n")
    assert p2pnode_imports(src) == [(1, "p2pnode.net.link", ""),
                                    (3, "p2pnode.wire.messages", "Ping")]
