"""``SlimModel.run_widths`` (one stem per batch) and the cached feature extraction of a sweep."""

import pytest
import torch

from slimkern.analysis.datasets import class_folder_dataset
from slimkern.analysis.features import extract_features
from tests.analysis.test_datasets import EUROSAT_MODEL, _tree
from tests.helpers import tiny_model
from tests.zoo.test_all_backends import INPUTS, NAMES, small_model

WIDTHS = (1.0, 0.3, 0.01)


def _count_stem_calls(model) -> list[int]:
    """Replace ``model.embed`` by a wrapper that counts its calls (returned list holds the count)."""
    calls, embed = [0], model.embed

    def counted(*args, **kwargs):
        calls[0] += 1
        return embed(*args, **kwargs)

    model.embed = counted
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_run_widths_equals_run_for_every_model(name):
    model = small_model(name, "torch")
    inputs = INPUTS.get(name, {})
    bands = len(inputs["wavelengths"]) if "wavelengths" in inputs else len(model.cfg.bands)
    size = model.cfg.arch.img_size
    x = torch.randn(1, bands, size, size)
    out = model.run_widths(x, WIDTHS, mode="attn+ffn", **inputs)
    assert list(out) == list(WIDTHS)
    for width in WIDTHS:
        torch.testing.assert_close(out[width], model.run(x, width, **inputs), rtol=1e-6, atol=1e-6)


def test_run_widths_embeds_once_and_matches_run_in_every_mode():
    model = tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)
    x = torch.randn(3, 3, 64, 64)
    for mode in ("attn+ffn", "attn", "ffn"):
        expected = {w: model.run(x, w, mode=mode, output="tokens") for w in WIDTHS}
        calls = _count_stem_calls(model)
        out = model.run_widths(x, WIDTHS, mode=mode, output="tokens")
        assert calls[0] == 1
        for width in WIDTHS:
            torch.testing.assert_close(out[width], expected[width], rtol=0, atol=0)
        del model.embed


def test_run_widths_checks_its_inputs():
    model = tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
        model.run_widths(torch.randn(1, 3, 64, 64), [1.0, 0.0])
    with pytest.raises(ValueError, match="bands"):
        model.run_widths(torch.randn(1, 4, 64, 64), [1.0])


def test_extract_features_computes_the_stem_once_per_batch(tmp_path):
    model = tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)
    data = class_folder_dataset(_tree(tmp_path / "data", per_class=5))  # 10 images
    calls = _count_stem_calls(model)
    feats = extract_features(model, data, WIDTHS, tmp_path / "features", batch_size=4, chunk_size=8,
                             progress=False)
    # chunks of 8 + 2 images, batches of 4 within a chunk: 4 + 4 | 2 -> 3 stems for 3 widths (not 9)
    assert calls[0] == 3
    assert sorted(feats) == sorted(WIDTHS) and all(f.shape == (10, 32) for f in feats.values())
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["chunk_00000.npz", "chunk_00001.npz"]
    # cached chunks are reused: nothing is recomputed
    again = extract_features(model, data, WIDTHS, tmp_path / "features", batch_size=4, chunk_size=8,
                             progress=False)
    assert calls[0] == 3
    for width in WIDTHS:
        assert (again[width] == feats[width]).all()


def test_run_widths_with_duplicate_widths_and_widths_of_one_plan():
    model = tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)
    x = torch.randn(2, 3, 64, 64)
    assert model.plan(0.001) == model.plan(0.0025)  # both round to the smallest slice
    out = model.run_widths(x, [0.5, 0.001, 0.0025, 0.5])
    assert list(out) == [0.5, 0.001, 0.0025]  # one entry per distinct width, first-seen order
    for width in out:
        torch.testing.assert_close(out[width], model.run(x, width), rtol=0, atol=0)
