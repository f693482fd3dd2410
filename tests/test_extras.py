"""Install edges (issue 13 item 10): every package slimkern imports is declared (base or an extra), and a feature
whose extra is missing says so in one line naming the pip install, at once, not minutes into its work."""

import ast
import functools
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@functools.cache
def distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> dict[str, set[str]]:
    """Distribution names per extra ('' = the base dependencies)."""
    groups = {"": PYPROJECT["dependencies"], **PYPROJECT["optional-dependencies"]}
    return {extra: {requirement_name(r) for r in reqs} for extra, reqs in groups.items()}


def imported_modules() -> set[str]:
    """Top-level modules that slimkern's own code imports (absolute imports outside the standard library)."""
    found = set()
    for path in (ROOT / "slimkern").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # imports for type checkers only never run
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "slimkern"}


def test_every_imported_package_is_declared():
    names = set().union(*declared().values())
    undeclared = {}
    for module in sorted(imported_modules()):
        candidates = {d.lower().replace("_", "-") for d in distributions().get(module, [module])}
        if not candidates & names:
            undeclared[module] = sorted(candidates)
    assert not undeclared, f"imported but declared nowhere in pyproject.toml: {undeclared}"


def test_each_extra_declares_the_modules_it_is_asked_for():
    from slimkern.extras import EXTRAS

    groups = declared()
    for extra, modules in EXTRAS.items():
        assert extra in groups, extra
        for module in modules:
            candidates = {d.lower().replace("_", "-") for d in distributions().get(module, [module])}
            assert candidates & groups[extra], f"{module} is not declared in the {extra!r} extra"


# Each case hides one module as if its extra were not installed: a None entry in sys.modules makes `import x` raise
# ModuleNotFoundError (and importlib.util.find_spec("x") answer None). One fresh interpreter runs every case in turn:
# slimkern imports no extra's module until a command needs it, so no case sees a module an earlier one imported.
CASES = [
    ("fastapi", "serve", ["serve", "vit_tiny_eurosat"]),
    ("prometheus_client", "serve", ["serve", "vit_tiny_eurosat"]),
    ("threadpoolctl", "analysis", ["sweep", "--out", "run"]),
    ("sklearn", "analysis", ["sweep", "--out", "run"]),
    ("matplotlib", "analysis", ["plot", "."]),
    ("rasterio", "scene", ["embed", "vit_tiny_eurosat", "scene.tif", "--out", "run/emb.tif"]),
    ("pyarrow", "scene", ["embed", "vit_tiny_eurosat", "scene.tif", "--out", "run/emb.parquet"]),
    ("ray", "ray", ["embed", "vit_tiny_eurosat", "scene.tif", "--out", "run/emb.tif", "--ray"]),
]
RUN_CASES = """
import contextlib, io, json, sys
from slimkern.cli import main
results = []
for hidden, argv in json.loads(sys.argv[1]):
    sys.modules[hidden] = None
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    del sys.modules[hidden]
    results.append((code, err.getvalue()))
print(json.dumps(results))
"""


def test_a_missing_extra_is_one_line_naming_the_install(tmp_path):
    cases = json.dumps([(hidden, argv) for hidden, _, argv in CASES])
    proc = subprocess.run([sys.executable, "-c", RUN_CASES, cases], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for (hidden, extra, argv), (code, err) in zip(CASES, json.loads(proc.stdout), strict=True):
        lines = err.strip().splitlines()
        assert code == 3 and len(lines) == 1, (argv, hidden, err)
        assert f'pip install "slimkern[{extra}]"' in lines[0] and repr(hidden) in lines[0], err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_ray_deployment_names_its_extra(monkeypatch):
    pytest.importorskip("fastapi", reason="the Ray replica serves through the HTTP service ('serve' extra)")
    from slimkern.extras import MissingExtra
    from slimkern.serving import ray_serve

    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails as if it were not installed
    with pytest.raises(MissingExtra, match=r'pip install "slimkern\[ray\]"'):
        ray_serve.build_app("vit_tiny_eurosat")


def test_the_lightning_module_names_its_extra(monkeypatch):
    from slimkern.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "slimkern.train.lightning", raising=False)  # imported afresh, without Lightning
    with pytest.raises(MissingExtra, match=r"'lightning', which is not installed: pip install \"slimkern\[train\]\""):
        importlib.import_module("slimkern.train.lightning")


def test_reading_a_geotiff_names_the_extra(monkeypatch, tmp_path):
    from slimkern.analysis.datasets import read_image
    from slimkern.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "tifffile", None)  # `slimkern train` reads GeoTIFFs without sweep's check
    with pytest.raises(MissingExtra, match=r"'tifffile', which is not installed: pip install \"slimkern\[analysis\]\""):
        read_image(tmp_path / "scene.tif")
