"""The torch backend against the float64 reference path, and the reference against timm."""

import warnings

import pytest
import torch
from torch import nn

import slimkern
from slimkern.zoo.vit import to_timm
from tests.helpers import rel_error, tiny_model

WIDTHS = (0.001, 0.01, 0.1, 0.333, 0.5, 1.0)
MODES = ("attn+ffn", "attn", "ffn")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def images(model):
    # fresh random, image-like inputs for every test (never zeros)
    return torch.randn(2, 3, 224, 224)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_engine_matches_reference(model, images, width, mode):
    for output in ("pooled", "tokens"):
        fast = model.run(images, width, mode=mode, output=output)
        ref = model.reference(images, width, mode=mode, output=output)
        assert fast.dtype == torch.float32 and ref.dtype == torch.float64
        assert rel_error(fast, ref) < 1e-5, (width, mode, output)


def test_widths_really_change_the_output(model, images):
    # a reference that ignored the width would pass the test above; this one would catch it
    outs = [model.run(images, w) for w in (1.0, 0.5, 0.1)]
    assert rel_error(outs[1], outs[0]) > 1e-2 and rel_error(outs[2], outs[1]) > 1e-2


def test_output_shapes(model, images):
    assert model.run(images, 0.1).shape == (2, 128)
    assert model.run(images, 0.1, output="tokens").shape == (2, 197, 128)
    assert model(images, width=0.1).shape == (2, 128)


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3), (torch.float64, 1e-12)])
def test_low_precision_against_float64(dtype, tol):
    model = tiny_model(dtype=dtype)
    x = torch.randn(2, 3, 224, 224).to(dtype)
    for width in (1.0, 0.1, 0.01):
        report = model.validate(x, width)
        assert report.rel_error < tol and report.ok, report


def test_validate_reports_errors(model, images):
    report = model.validate(images, 0.333, mode="attn")
    assert report.ok and report.backend == "torch" and report.width == 0.333
    assert 0 < report.max_abs_error < 1e-3 and 0 < report.rel_error < 1e-5
    assert "ok" in str(report)


def test_other_image_size_resamples_positions(model):
    x = torch.randn(1, 3, 96, 160)
    fast = model.run(x, 0.1, output="tokens")
    assert fast.shape == (1, 1 + 6 * 10, 128)
    assert rel_error(fast, model.reference(x, 0.1, output="tokens")) < 1e-5


def timm_vit(model: slimkern.SlimModel, state=None, **kwargs) -> nn.Module:
    """timm's independent implementation, fed the official-layout state dict, in float64."""
    return to_timm(model, state, **kwargs).double()


def test_full_width_equals_timm(model, images):
    vit = timm_vit(model)
    with torch.no_grad():
        want_tokens = vit.forward_features(images.double())
        want_pooled = vit(images.double())
    assert rel_error(model.run(images, 1.0, output="tokens"), want_tokens) < 1e-5
    assert rel_error(model.run(images, 1.0), want_pooled) < 1e-5
    assert rel_error(model.reference(images, 1.0), want_pooled) < 1e-12


def test_full_width_equals_timm_at_another_size(model):
    # SatMAE's own code (MAE util/pos_embed.py::interpolate_pos_embed) resamples the stored grid
    # bicubically without antialiasing; build timm at 256 px with positions resampled that way
    state = model.state_dict()
    grid = state["pos_embed"][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    vit = timm_vit(model, state=state, img_size=256)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        want = vit(x.double())
    assert rel_error(model.run(x), want) < 1e-5


@pytest.mark.slow
def test_satmae_vit_large_against_timm_and_reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("satmae")
    x = torch.randn(1, 3, 224, 224)
    vit = timm_vit(model).float()
    with torch.no_grad():
        assert rel_error(model.run(x), vit(x)) < 1e-5
    assert model.validate(x, 0.1).rel_error < 1e-5
