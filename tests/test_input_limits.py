"""Inputs at the edges: images too large to embed in bounded time, finite inputs that overflow inside the model,
numpy scalars where a number is expected, and architecture overrides that cannot build a model."""

import warnings

import numpy as np
import pytest
import torch

import slimkern
from slimkern import Engine
from tests.helpers import TINY, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# -- issue 13 item 1: a bounded token count per image -------------------------------------------------------------
def test_default_token_limit_is_generous_but_finite(model):
    assert model.max_tokens == 8 * 197  # 8 x SatMAE's 197 tokens at 224 px
    model.run(torch.randn(1, 3, 624, 624))  # 1522 tokens: fine
    with pytest.raises(ValueError, match=r"2048x2048 px makes 16385 tokens, over this model's limit of 1576 tokens "
                                         r"per image \(max_tokens"):
        model.check_token_count((1, 3, 2048, 2048))  # refused from the shape alone, before any allocation


def test_token_limit_is_checked_by_run_and_overridable():
    small = tiny_model(max_tokens=50)
    assert small.max_tokens == 50
    with pytest.raises(ValueError, match=r"224x224 px makes 197 tokens, over this model's limit of 50 tokens"):
        small.run(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="limit of 50 tokens"):
        Engine(small, widths=(1.0,)).run(torch.randn(1, 3, 224, 224), width=0.5)
    small.run(torch.randn(1, 3, 96, 96))  # 37 tokens
    small.max_tokens = 197
    small.run(torch.randn(1, 3, 224, 224))
    for bad in (0, -5, 2.5, "many", True):
        with pytest.raises((TypeError, ValueError), match="max_tokens must be a positive whole number"):
            small.max_tokens = bad


def test_token_limit_counts_frames_of_temporal_models():
    prithvi = tiny_model("prithvi_eo_v1_100", img_size=32, patch_size=16)
    assert prithvi.max_tokens == 8 * (1 + 3 * 4)  # 3 frames of 2x2 patches by default
    assert prithvi.input_tokens((1, 6, 3, 32, 32)) == 1 + 3 * 4
    assert prithvi.input_tokens((1, 6, 32, 32)) == 1 + 4
    with pytest.raises(ValueError, match=r"40 frames of 32x32 px makes 161 tokens"):
        prithvi.check_token_count((1, 6, 40, 32, 32))


# -- issue 13 item 5: finite inputs whose embedding overflows -----------------------------------------------------
def test_huge_finite_input_is_an_error_not_a_non_finite_embedding(model):
    x = torch.randn(3, 3, 224, 224)
    x[1, :, :16, :16] = 1e38  # one patch of finite values that overflow float32 in the patch embedding (a corrupt
    # block: the band medians, which the input plausibility check reads, stay normal)
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] of 3 .* not finite .* \(largest \|x\| 1e\+38\)") as err:
        model.run(x, 0.5)
    assert type(err.value).__name__ == "NonFiniteOutputError" and err.value.output.shape == (3, 128)
    with pytest.raises(ValueError, match="not finite"):
        model.run(x, 0.5, output="tokens")
    with pytest.raises(ValueError, match="not finite"):
        model.run_widths(x, (1.0, 0.1))
    with pytest.raises(ValueError, match="not finite"):
        Engine(model, widths=(1.0,)).run(x, flops=1.0)
    assert torch.isfinite(model.run(x[[0, 2]], 0.5)).all()  # the other images are fine on their own


def test_finite_check_in_low_precision():
    half = tiny_model(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="not finite"):
        x = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
        x[..., :16, :16] = 3e38
        half.run(x)


# -- issue 13 item 9: numpy scalars are numbers; architecture overrides are checked -------------------------------
def test_numpy_scalars_are_accepted_wherever_a_number_is(model):
    x = torch.randn(1, 3, 224, 224)
    expected = model.run(x, 0.5)
    for width in (np.float32(0.5), np.float64(0.5), np.float16(0.5)):
        assert torch.equal(model.run(x, width), expected)
    assert torch.equal(model.run(x, np.int64(1)), model.run(x, 1.0))
    assert model.plan(np.float32(0.25)) is model.plan(0.25)
    assert model.flops(np.float32(0.1), image_size=np.int64(224)) == model.flops(0.1, image_size=224)
    assert model.run_widths(x, np.array([1.0, 0.5])).keys() == {1.0, 0.5}
    engine = Engine(model, widths=np.array([1.0, 0.5, 0.1]))
    assert engine.choose(np.int64(1), flops=np.float32(0.6)).width == 0.5
    engine.profile(batch_sizes=np.array([1]), widths=[np.float32(0.25)], repeats=1, progress=False)
    assert engine.choose(1, latency_ms=np.float64(1e9)).width == 0.25
    with pytest.raises(TypeError, match="width must be a number"):
        model.run(x, np.bool_(True))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("depth", 0, "depth must be a whole number >= 1, got 0"),
    ("depth", -1, "depth must be a whole number >= 1, got -1"),
    ("depth", 1.5, "depth must be a whole number >= 1, got 1.5"),
    ("dim", 0, "dim must be a whole number >= 1"),
    ("mlp_ratio", 0.0, "mlp_ratio must be a positive finite number"),
    ("mlp_ratio", float("nan"), "mlp_ratio must be a positive finite number"),
    ("qkv_bias", "yes", "qkv_bias must be True or False"),
    ("patch_size", 0, "patch_size must be a whole number >= 1"),
])
def test_architecture_overrides_are_validated(field, value, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError), match=message):
            slimkern.load("satmae", **{**TINY, field: value})


def test_architecture_overrides_take_numpy_integers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("satmae", depth=np.int64(1), dim=np.int32(64), num_heads=2)
    assert len(model.blocks) == 1 and model.dim == 64 and type(model.cfg.arch.depth) is int
