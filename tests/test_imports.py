"""The package's import structure: ``import slimkern`` (and ``slimkern --help``, ``slimkern list``) load neither timm
nor the Triton compiler, and no model family until a model is used; every module imports on its own; the import
graph has no cycles, function-local imports included; the registry's static table matches what the zoo registers.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "slimkern"
HEAVY = ("timm", "triton", "torch._dynamo", "torchvision")

PROBE = f"""
import contextlib, io, json, sys
HEAVY = {HEAVY!r}

def loaded():
    return sorted(m for m in sys.modules if m.startswith("slimkern.zoo.") or m.split(".")[0] in ("timm", "triton",
                  "torchvision") or m == "torch._dynamo")

import slimkern
after_import = loaded()
from slimkern import registry
where, original = {{}}, registry.register_model

def register(cfg):  # which zoo module registers which names (a family may import another family)
    frame = sys._getframe(1)
    while not frame.f_globals["__name__"].startswith("slimkern.zoo."):
        frame = frame.f_back
    for name in (cfg.name, *cfg.aliases):
        where[name] = frame.f_globals["__name__"].rsplit(".", 1)[1]
    return original(cfg)

registry.register_model = register
from slimkern.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    after_help = loaded()
    main(["list"])
print(json.dumps({{"import": after_import, "help": after_help, "list": loaded(), "where": where,
                  "table": {{name: module for module, names in registry.ZOO.items() for name in names}}}}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_import_slimkern_loads_no_model_family_nor_timm(probe):
    assert probe["import"] == []


def test_cli_help_and_list_load_no_heavy_library(probe):
    assert probe["help"] == []
    assert not [m for m in probe["list"] if not m.startswith("slimkern.zoo.")]  # list reads the families, not timm


def test_the_registry_table_names_where_each_model_is_registered(probe):
    assert probe["where"] == probe["table"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported slimkern module, function-local?) for every import statement of one module that runs (imports
    under ``if TYPE_CHECKING:`` are for annotations only)."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        if id(node) in typing_only:
            continue
        found += [(t, id(node) not in top_level) for t in targets if t in MODULES and t != name]
    return found


def test_the_import_graph_has_no_cycles():
    """Module-level and function-local imports alike: a cycle hidden in a function is still a cycle."""
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    done: set[str] = set()
    cycles = []

    def visit(path: list[str], edges: list[str]) -> None:  # depth-first, path = the modules being visited
        for target, local in graph[path[-1]]:
            edge = f"{path[-1]} -> {target}" + (" (function-local)" if local else "")
            if target in path:
                cycles.append(edges[path.index(target):] + [edge])
            elif target not in done:
                visit(path + [target], edges + [edge])
        done.add(path[-1])

    for name in MODULES:
        if name not in done:
            visit([name], [])
    assert not cycles, "import cycles:\n" + "\n".join("  " + "; ".join(c) for c in cycles)


ALONE = """
import importlib, os, sys, traceback
import numpy, torch  # loaded once, shared by the forks: each module is then imported alone in a fresh child
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(f"--- {name}\\n{traceback.format_exc()}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        failed.append(name)
print("FAILED", " ".join(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="imports each module in a forked child")
def test_each_module_imports_alone():
    result = subprocess.run([sys.executable, "-c", ALONE, *MODULES], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("FAILED"), result.stdout[-6000:]
