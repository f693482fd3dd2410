"""Block options later families need: bias-free layers, gated (SwiGLU) FFN, LayerScale.

They are exercised through a SatMAE-shaped model whose blocks are swapped for the variant, so the
whole slimmed forward (torch backend) is checked against the float64 reference and the FLOP counter.
"""

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkern.blocks import Block
from tests.helpers import rel_error, tiny_model


def variant_model(**spec_changes):
    model = tiny_model()
    spec = dataclasses.replace(model.blocks[0].spec, **spec_changes)
    model.blocks = nn.ModuleList(Block(spec) for _ in model.blocks)
    model.blocks.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(1)
    for block in model.blocks:
        block.init_random(generator)
    return model


VARIANTS = {
    "swiglu_bias_free": {"ffn": "swiglu", "qkv_bias": False, "proj_bias": False, "mlp_bias": False},
    "swiglu": {"ffn": "swiglu", "mlp_hidden": 341},
    "layer_scale": {"layer_scale": True},
    "no_qkv_bias": {"qkv_bias": False},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("width", [1.0, 0.333, 0.1, 0.001])
def test_variant_matches_reference(variant, width):
    model = variant_model(**VARIANTS[variant])
    x = torch.randn(1, 3, 224, 224)
    for mode in ("attn+ffn", "attn", "ffn"):
        assert rel_error(model.run(x, width, mode=mode), model.reference(x, width, mode=mode)) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_flops(variant):
    model = variant_model(**VARIANTS[variant])
    x = torch.randn(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model.reference(x, 0.25)
    assert model.flops(0.25) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_bias_free_layers_have_no_bias_keys_and_round_trip():
    model = variant_model(**VARIANTS["swiglu_bias_free"])
    state = model.state_dict()
    assert "blocks.0.attn.qkv.bias" not in state and "blocks.0.mlp.fc2.bias" not in state
    assert state["blocks.0.mlp.fc3.weight"].shape == (512, 128)
    x = torch.randn(1, 3, 224, 224)
    twin = variant_model(**VARIANTS["swiglu_bias_free"])
    twin.load_state_dict(state)
    assert rel_error(twin.run(x, 0.1), model.run(x, 0.1)) == 0.0


def test_unknown_ffn_kind():
    with pytest.raises(ValueError, match="ffn must be 'gelu' or 'swiglu'"):
        dataclasses.replace(tiny_model().blocks[0].spec, ffn="relu")
