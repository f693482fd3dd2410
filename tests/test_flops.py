import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from slimkern.api import build_meta
from tests.helpers import tiny_model


def counted_flops(model, x, width, mode) -> int:
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode)
    return counter.get_total_flops()


@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.333, 0.1, 0.01])
def test_flops_match_flop_counter_on_reference(width, mode):
    model = tiny_model()
    x = torch.randn(1, 3, 224, 224)
    counted = counted_flops(model, x, width, mode)
    assert model.flops(width, mode=mode) == pytest.approx(counted, rel=0.01)


def test_flops_match_flop_counter_at_another_size():
    model = tiny_model(num_heads=4)
    x = torch.randn(1, 3, 96, 160)
    assert model.flops(0.25, image_size=(96, 160)) == pytest.approx(counted_flops(model, x, 0.25, "attn+ffn"),
                                                                    rel=0.01)


def test_vit_large_matches_paper_reference_values():
    # docs/slimming.md (Compute) quotes ViT-L/16 at 224 px with 12 bands: 124.0 GFLOP, s = 0.1 -> ~10.7 %.
    # SatMAE is RGB; 9 more bands add 2 * 196 patches * 9 * 16 * 16 * 1024 to the (unslimmed) stem.
    model = build_meta("satmae")
    extra = 2 * 196 * 9 * 16 * 16 * 1024
    full, slim = model.flops(1.0) + extra, model.flops(0.1) + extra
    assert full / 1e9 == pytest.approx(124.0, rel=0.01)
    assert slim / full == pytest.approx(0.107, abs=0.002)


def test_satmae_rgb_relative_compute():
    model = build_meta("satmae")
    assert model.flops() / 1e9 == pytest.approx(123.1, rel=0.01)  # timm's table: ViT-L/16 123.1 GFLOP
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.25, 0.1, 0.001)]
    assert rel[0] == 1.0 and rel == sorted(rel, reverse=True)
    assert rel[3] == pytest.approx(0.10, abs=0.005)
    assert rel[4] < 0.01  # the unslimmed stem and d_k' >= 1 set the floor
    # attention-only and FFN-only slimming cannot go far below their floors (paper: ~65-69 % / ~34-37 %)
    assert 0.62 < model.relative_flops(0.001, mode="attn") < 0.72
    assert 0.30 < model.relative_flops(0.001, mode="ffn") < 0.40


def test_flops_bad_image_size():
    with pytest.raises(ValueError, match="not a positive multiple of the patch size 16"):
        build_meta("satmae").flops(image_size=100)
