"""Weights by name (issue 13 items 12, 13): shipped weights by default, ``weights="pretrained"`` downloads the
official file, verifies its pinned SHA-256, caches it and works offline from the cache. Downloads come from a local
mirror (a file:// folder or an HTTP server on loopback, via SLIMKERN_WEIGHTS_MIRROR), never the network."""

import dataclasses
import functools
import http.server
import shutil
import threading
import warnings

import pytest
import torch

import slimkern
from slimkern import registry
from slimkern.zoo.eurosat_vit import WEIGHTS

SHIPPED_SHA256 = "65508a5c3c78c72471dcdcbd0313a6bbf44ad97b28fab2fc0dfa64270c17df46"
X = torch.randn(2, 3, 64, 64)


@pytest.fixture(scope="module")
def reference():
    """Embeddings of the shipped weights, loaded by path."""
    return slimkern.load("vit_tiny_eurosat", weights=WEIGHTS).run(X, 0.5)


def load_quietly_checked(*args, **kwargs):
    """``slimkern.load`` with every warning an error (loading real weights warns about nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return slimkern.load(*args, **kwargs)


# -- item 12: the shipped weights are the default -------------------------------------------------------------------
def test_load_by_name_uses_the_shipped_weights(reference):
    assert torch.equal(load_quietly_checked("vit_tiny_eurosat").run(X, 0.5), reference)
    assert torch.equal(load_quietly_checked("vit_tiny_eurosat", weights="pretrained").run(X, 0.5), reference)
    random = load_quietly_checked("vit_tiny_eurosat", weights="random").run(X, 0.5)
    assert not torch.allclose(random, reference)
    with pytest.warns(UserWarning, match="random weights"):  # shipped weights do not fit other architectures
        slimkern.load("vit_tiny_eurosat", depth=2)


def test_the_shipped_file_matches_its_pinned_hash():
    from slimkern.provenance import file_sha256

    assert registry.get_cfg("vit_tiny_eurosat").weights_sha256 == SHIPPED_SHA256 == file_sha256(WEIGHTS)


def test_serve_and_demo_use_the_shipped_weights(monkeypatch, capsys, reference):
    uvicorn = pytest.importorskip("uvicorn", reason="the serve command needs the 'serve' extra")
    from slimkern.cli import main
    from slimkern.demo import run_demo

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app.state.engine.model))
    assert main(["serve", "vit_tiny_eurosat", "--widths", "1,0.5"]) == 0
    assert "random" not in capsys.readouterr().err
    assert torch.equal(served[0].run(X, 0.5), reference)
    rows = run_demo("vit_tiny_eurosat", repeats=1)
    assert all(row["ok"] for row in rows)
    out = capsys.readouterr().out
    assert "weights: vit_tiny_eurosat.safetensors (shipped with slimkern)" in out and "random" not in out


# -- item 13: weights="pretrained" downloads, verifies, caches --------------------------------------------------------
@pytest.fixture
def mirrored(tmp_path, monkeypatch):
    """A model registered with an official URL and the pinned hash of its file, that file in a local mirror folder
    and an empty cache."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    shutil.copy(WEIGHTS, mirror / "tiny_official.safetensors")
    cfg = dataclasses.replace(registry.get_cfg("vit_tiny_eurosat"), name="tiny_official", shipped_weights="",
                              weights_url="https://example.invalid/models/tiny_official.safetensors",
                              weights_sha256=SHIPPED_SHA256)
    monkeypatch.setitem(registry._MODELS, "tiny_official", cfg)
    monkeypatch.setenv("SLIMKERN_CACHE", str(cache))
    monkeypatch.setenv("SLIMKERN_WEIGHTS_MIRROR", mirror.as_uri())
    return mirror, cache


def cached_files(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_pretrained_downloads_verifies_and_caches(mirrored, monkeypatch, reference):
    mirror, cache = mirrored
    model = load_quietly_checked("tiny_official", weights="pretrained")
    assert torch.equal(model.run(X, 0.5), reference)
    assert cached_files(cache) == ["tiny_official.safetensors"]
    shutil.rmtree(mirror)  # offline: the mirror (and the official site) are gone
    monkeypatch.setenv("SLIMKERN_WEIGHTS_MIRROR", "http://127.0.0.1:9/unreachable")
    assert torch.equal(load_quietly_checked("tiny_official", weights="pretrained").run(X, 0.5), reference)


def test_a_file_with_another_hash_is_refused_and_not_kept(mirrored):
    mirror, cache = mirrored
    (mirror / "tiny_official.safetensors").write_bytes(b"not the official file")
    with pytest.raises(ValueError, match=rf"has SHA-256 [0-9a-f]{{64}}, expected {SHIPPED_SHA256}; it was not kept"):
        slimkern.load("tiny_official", weights="pretrained")
    assert cached_files(cache) == []


def test_an_unreachable_source_is_one_clear_error(mirrored, monkeypatch):
    monkeypatch.setenv("SLIMKERN_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(OSError, match=r"tiny_official: cannot download http://127\.0\.0\.1:9/tiny_official"):
        slimkern.load("tiny_official", weights="pretrained")


def test_pretrained_over_http_on_loopback(mirrored, monkeypatch, reference):
    mirror, cache = mirrored
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("SLIMKERN_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
        assert torch.equal(load_quietly_checked("tiny_official", weights="pretrained").run(X, 0.5), reference)
    finally:
        server.shutdown()
        thread.join(10)


def test_models_without_a_pinned_hash_refuse_pretrained(mirrored):
    _, cache = mirrored
    with pytest.raises(ValueError, match=r"satmae_vitl_rgb: slimkern has no pinned SHA-256 for its official file "
                                         r"https://zenodo.org/.*/fmow_pretrain.pth"):
        slimkern.load("satmae", weights="pretrained")
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal digits"):
        slimkern.load("satmae", weights="pretrained", sha256="abc")
    with pytest.raises(ValueError, match="sha256 verifies the download of weights='pretrained'"):
        slimkern.load("satmae", weights=WEIGHTS, sha256=SHIPPED_SHA256)
    assert cached_files(cache) == []


def test_a_hash_given_by_the_user_verifies_the_download(mirrored, reference):
    cfg = registry._MODELS["tiny_official"]
    registry._MODELS["tiny_official"] = dataclasses.replace(cfg, weights_sha256="")
    try:
        with pytest.raises(ValueError, match="no pinned SHA-256"):
            slimkern.load("tiny_official", weights="pretrained")
        model = load_quietly_checked("tiny_official", weights="pretrained", sha256=SHIPPED_SHA256.upper())
        assert torch.equal(model.run(X, 0.5), reference)
    finally:
        registry._MODELS["tiny_official"] = cfg


def test_official_file_names_are_distinct():
    """Mirrors serve the files under their own names: two models must not share one."""
    from slimkern.weights import official_file_name

    names = {}
    for name in registry.list_models():
        cfg = registry.get_cfg(name)
        if cfg.weights_url.startswith("http"):
            names.setdefault(official_file_name(cfg), set()).add(cfg.name)
    assert all(len(models) == 1 for models in names.values()), names
