"""The dense copy of one width: blocks of exactly the slimmed shapes that, at width 1.0, compute run() at that width.

Against the float64 reference of the ORIGINAL model (independent: it slices the official layout itself), at odd
widths, every block variant (LayerScale, gated FFN, cross-attention, bias-free, ALiBi bias).
"""

import pytest
import torch

from slimkern.export.dense import dense_copy
from slimkern.layout import heads_cols_to_official, qkv_to_official
from tests.export.cases import tiny
from tests.helpers import rel_error


@pytest.mark.parametrize("name", ["satmae", "dinov2_vitb14", "terramind_base", "croma_base"])
@pytest.mark.parametrize("width", [0.45, 0.07, 0.001])  # d_k' = 21, 3, 1 of 48
def test_dense_copy_at_width_one_equals_the_slimmed_model(name, width):
    model = tiny(name)
    dense = dense_copy(model, width)
    bands = 14 if name == "croma_base" else len(model.cfg.bands)  # CROMA: the joint encoder, cross-attention
    x = torch.randn(2, bands, *(2 * [model.cfg.arch.img_size]))
    want = model.reference(x, width, output="tokens")
    got = dense.run(x, 1.0, output="tokens")
    assert torch.isfinite(got).all() and rel_error(got, want) < 1e-5
    plan, full = dense.plan(1.0).blocks[0], model.plan(width).blocks[0]
    assert (plan.head_dim, plan.mlp_hidden, plan.scale) == (full.head_dim, full.mlp_hidden, full.scale)


def test_dense_weights_are_compact_copies_and_the_model_is_untouched():
    model = tiny("satmae")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = dense_copy(model, 0.07)
    block, kept = dense.blocks[0], model.plan(0.07).blocks[0]  # d_k' = 3 of 48, d_h' = 26 of 384
    assert block.attn.qkv.weight.shape == (3 * 2 * 3, 96) and block.mlp.fc2.weight.shape == (96, 26)
    for name, param in block.named_parameters():
        assert param.untyped_storage().nbytes() == param.numel() * param.element_size(), name
    # the reduced model in the checkpoint's layout: per head, the first d_k' rows of q, k and v
    official = model.blocks[0].official("attn.qkv.weight").view(3, 2, 48, 96)[:, :, : kept.head_dim]
    assert torch.equal(dense.state_dict()["blocks.0.attn.qkv.weight"], official.reshape(-1, 96))
    proj = heads_cols_to_official(model.blocks[0].attn.proj.weight, 2, 48).view(96, 2, 48)[:, :, :3]
    assert torch.equal(dense.state_dict()["blocks.0.attn.proj.weight"], proj.reshape(96, -1))
    assert torch.equal(qkv_to_official(block.attn.qkv.weight, 2, 3), dense.state_dict()["blocks.0.attn.qkv.weight"])
    dense.to(torch.float64)  # converting the copy must not convert the model's shared stem
    dense.cls_token.data.zero_()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.cls_token.dtype == torch.float32
