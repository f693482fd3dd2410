"""Smoke run of the load benchmark (``make test``): a tiny model, 4 clients for 2 s, no errors, results written."""

import json

import pytest

pytest.importorskip("fastapi", reason="the HTTP server needs the 'serve' extra")
from benchmarks.serve_load import main  # noqa: E402


def test_serve_load_smoke(tmp_path):
    out = tmp_path / "serve_load.json"
    result = main(["--arch", "depth=2,dim=128,num_heads=2", "--seconds", "2", "--warmup-seconds", "1", "--clients",
                   "4", "--budgets", "width=1,flops=0.5,width=0.1", "--json", str(out), "--markdown",
                   str(tmp_path / "serve_load.md")])
    assert result["errors"] == 0 and result["warmup_errors"] == 0 and result["ok"] > 0
    assert {r["width"] for r in result["per_width"]} <= {1.0, 0.5, 0.25, 0.1}
    assert json.loads(out.read_text())["requests"] == result["requests"]
    assert "| width |" in (tmp_path / "serve_load.md").read_text()
