"""Generic attention features: an additive per-head logits bias and the cross-attention sublayer.

Both are checked through every path (torch backend, triton backend in the interpreter, float64 reference),
against an independent implementation at full width (``torch.nn.MultiheadAttention``) and the FLOP counter.
"""

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkern import layout
from slimkern.backends import select_backend
from slimkern.blocks import Block, BlockSpec
from slimkern.flops import block_flops, stack_flops
from slimkern.plan import make_plan
from slimkern.reference import REFERENCE, cross_attention, kept_head_dims
from slimkern.registry import get_cfg
from slimkern.zoo.vit import ViT
from tests.helpers import TINY, rel_error

WIDTHS = (1.0, 0.5, 0.1, 0.001)
MODES = ("attn+ffn", "attn", "ffn")


# -- the bias hook on a whole model ----------------------------------------------------------------
class BiasedViT(ViT):
    """A plain ViT whose self-attentions get a fixed random per-head bias (a stand-in for ALiBi-like biases)."""

    def attention_bias(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        n = self.num_tokens(height, width)
        generator = torch.Generator().manual_seed(n)
        return (2 * torch.randn(self.cfg.arch.num_heads, n, n, generator=generator)).to(self.device, dtype)


def biased_model(**overrides) -> BiasedViT:
    cfg = get_cfg("satmae")
    cfg = dataclasses.replace(cfg, model_cls=BiasedViT,
                              arch=dataclasses.replace(cfg.arch, **{**TINY, "img_size": 64, **overrides}))
    model = BiasedViT(cfg)
    model.to_empty(device="cpu")
    model.init_random(torch.Generator().manual_seed(0))
    return model.eval()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_model_bias_matches_reference(width, mode):
    model = biased_model()
    x = torch.randn(2, 3, 64, 64)
    for output in ("pooled", "tokens"):
        assert rel_error(model.run(x, width, mode=mode, output=output),
                         model.reference(x, width, mode=mode, output=output)) < 1e-5


def test_bias_changes_the_output_and_default_is_none():
    model = biased_model()
    plain = ViT(model.cfg)
    plain.load_state_dict(model.state_dict(), assign=True)
    x = torch.randn(1, 3, 64, 64)
    assert plain.attention_bias(64, 64, torch.float32) is None
    assert rel_error(model.run(x, 0.5), plain.run(x, 0.5)) > 1e-2
    y = torch.randn(1, 3, 32, 48)  # the bias is rebuilt for another image size
    assert rel_error(model.run(y, 0.5), model.reference(y, 0.5)) < 1e-5


def test_model_bias_flops_unchanged():
    model = biased_model()
    with FlopCounterMode(display=False) as counter:
        model.reference(torch.randn(1, 3, 64, 64), 0.25)
    assert model.flops(0.25) == pytest.approx(counter.get_total_flops(), rel=0.01)


# -- blocks with a cross-attention sublayer ---------------------------------------------------------
def cross_blocks(depth: int = 2, dim: int = 32, heads: int = 2, **spec_changes) -> list[Block]:
    spec = BlockSpec(dim=dim, num_heads=heads, head_dim=dim // heads, mlp_hidden=2 * dim, norm_eps=1e-5,
                     cross_attn=True, **spec_changes)
    generator = torch.Generator().manual_seed(3)
    blocks = []
    for _ in range(depth):
        block = Block(spec)
        block.to_empty(device="cpu")
        block.init_random(generator)
        blocks.append(block.eval())
    return blocks


def inputs(blocks, batch=2, tokens=5, context=7, dtype=torch.float32):
    spec = blocks[0].spec
    heads, dim = spec.num_heads, spec.dim
    return (torch.randn(batch, tokens, dim, dtype=dtype), torch.randn(heads, tokens, tokens, dtype=dtype),
            torch.randn(batch, context, dim, dtype=dtype), torch.randn(heads, tokens, context, dtype=dtype))


def block_plan(blocks, width, mode="attn+ffn"):
    return make_plan(width, mode, tuple((b.spec.num_heads, b.spec.head_dim, b.spec.mlp_hidden) for b in blocks))


def reference(blocks, plan, x, bias, context, context_bias):
    return REFERENCE.forward_blocks(x.double(), blocks, plan, bias=None if bias is None else bias.double(),
                                    context=context.double(),
                                    context_bias=None if context_bias is None else context_bias.double())


@pytest.mark.parametrize("variant", [{}, {"qkv_bias": False, "layer_scale": True}])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_cross_attention_torch_backend_matches_reference(width, mode, variant):
    blocks = cross_blocks(**variant)
    x, bias, context, context_bias = inputs(blocks)
    plan = block_plan(blocks, width, mode)
    backend = select_backend("torch", x.device, x.dtype)
    for b, cb in ((bias, context_bias), (None, None)):
        fast = backend.forward_blocks(x, blocks, plan, bias=b, context=context, context_bias=cb)
        assert rel_error(fast, reference(blocks, plan, x, b, context, cb)) < 1e-5


def test_cross_attention_at_full_width_equals_multihead_attention():
    (block,) = cross_blocks(depth=1)
    spec = block.spec
    x, _, context, context_bias = inputs([block], dtype=torch.float64)
    block = block.double()
    norm = nn.LayerNorm(spec.dim, eps=spec.norm_eps, dtype=torch.float64)
    norm.load_state_dict({"weight": block.norm_cross.weight, "bias": block.norm_cross.bias})
    mha = nn.MultiheadAttention(spec.dim, spec.num_heads, batch_first=True, dtype=torch.float64)
    names = ("q", "k", "v")
    mha.load_state_dict({
        "in_proj_weight": torch.cat([block.official(f"cross_attn.{n}.weight") for n in names]),
        "in_proj_bias": torch.cat([block.official(f"cross_attn.{n}.bias") for n in names]),
        "out_proj.weight": block.official("cross_attn.proj.weight"),
        "out_proj.bias": block.cross_attn.proj.bias,
    })
    with torch.no_grad():
        mask = context_bias.repeat(x.shape[0], 1, 1)  # [B * H, Nq, Nk], batch-major
        want, _ = mha(norm(x), norm(context), norm(context), attn_mask=mask, need_weights=False)
        got = cross_attention(norm(x), norm(context), block, block_plan([block], 1.0).blocks[0], context_bias)
    assert rel_error(got, want) < 1e-12


def test_cross_attention_flops_match_flop_counter():
    blocks = cross_blocks()
    x, bias, context, context_bias = inputs(blocks, batch=1, tokens=6, context=9)
    for width in (1.0, 0.25):
        plan = block_plan(blocks, width)
        with FlopCounterMode(display=False) as counter:
            reference(blocks, plan, x, bias, context, context_bias)
        assert stack_flops(blocks, plan, 6, 32, context_tokens=9) == counter.get_total_flops()
    a, d = plan.blocks[0].attn_width, 32
    extra = 2 * 6 * d * a + 2 * 2 * 9 * d * a + 2 * 2 * 6 * 9 * a + 2 * 6 * a * d
    assert block_flops(6, d, plan.blocks[0], context_tokens=9) - block_flops(6, d, plan.blocks[0]) == extra


def test_cross_attention_state_dict_is_official_and_prefix_sliced():
    (block,) = cross_blocks(depth=1, heads=4)
    spec = block.spec
    state = block.state_dict()
    assert {"norm_cross.weight", "cross_attn.q.weight", "cross_attn.v.bias", "cross_attn.proj.weight"} <= set(state)
    twin = Block(spec)
    twin.load_state_dict(state, assign=True)
    for key, value in twin.state_dict().items():
        assert torch.equal(value, state[key]), key
    kept = 3
    idx = kept_head_dims(spec.num_heads, spec.head_dim, kept)
    for name in ("q", "k", "v"):
        stored = getattr(block.cross_attn, name).weight[: spec.num_heads * kept]
        official = state[f"cross_attn.{name}.weight"][idx]
        # stored rows are (j, h), the index set is (h, j): the same rows in another order
        assert torch.equal(stored.reshape(kept, spec.num_heads, -1).transpose(0, 1).reshape(len(idx), -1), official)


@pytest.mark.parametrize("heads, head_dim", [(2, 8), (3, 5), (16, 48)])
def test_heads_rows_layout_round_trips(heads, head_dim):
    w, b = torch.randn(heads * head_dim, 7), torch.randn(heads * head_dim)
    for t in (w, b):
        assert torch.equal(layout.heads_rows_to_official(layout.heads_rows_to_prefix(t, heads, head_dim), heads,
                                                         head_dim), t)
    labels = torch.arange(heads * head_dim, dtype=torch.float64)
    stored = layout.heads_rows_to_prefix(labels, heads, head_dim)
    assert stored[: heads * 2].tolist() == [h * head_dim + j for j in range(2) for h in range(heads)]


# -- errors ---------------------------------------------------------------------------------------
def test_bad_bias_and_context_are_clear_errors():
    blocks = cross_blocks()
    x, bias, context, context_bias = inputs(blocks)
    plan = block_plan(blocks, 0.5)
    backend = select_backend("torch", x.device, x.dtype)
    with pytest.raises(ValueError, match="need a context"):
        backend.forward_blocks(x, blocks, plan, bias=bias)
    with pytest.raises(ValueError, match=r"bias must have shape \[H, Nq, Nk\] = \[2, 5, 5\], got \[2, 5, 7\]"):
        backend.forward_blocks(x, blocks, plan, bias=context_bias, context=context)
    with pytest.raises(ValueError, match=r"context_bias must have shape .* \[2, 5, 7\], got \[2, 5, 5\]"):
        backend.forward_blocks(x, blocks, plan, context=context, context_bias=bias)
    with pytest.raises(TypeError, match="bias is torch.float64 but the tokens are torch.float32"):
        backend.forward_blocks(x, blocks, plan, bias=bias.double(), context=context)
    with pytest.raises(TypeError, match="context is torch.float64 but the tokens are torch.float32"):
        backend.forward_blocks(x, blocks, plan, context=context.double())
    with pytest.raises(ValueError, match=r"context must be \[B, M, d\] = \[2, M, 32\]"):
        backend.forward_blocks(x, blocks, plan, context=context[:1])
    plain = [Block(dataclasses.replace(blocks[0].spec, cross_attn=False))]
    with pytest.raises(ValueError, match="no block has a cross-attention sublayer"):
        backend.forward_blocks(x, plain, block_plan(plain, 0.5), context=context)
    with pytest.raises(ValueError, match="context_bias was given without a context"):
        backend.forward_blocks(x, plain, block_plan(plain, 0.5), context_bias=context_bias)


# -- the triton backend (Triton interpreter on CPU) ------------------------------------------------
@pytest.mark.parametrize("width", [1.0, 0.25, 0.001])
def test_triton_backend_bias_and_cross_attention(width):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    blocks = [b.to(device) for b in cross_blocks(depth=1, qkv_bias=False)]
    x, bias, context, context_bias = (t.to(device) for t in inputs(blocks, batch=1, tokens=5, context=9))
    plan = block_plan(blocks, width)
    backend = select_backend("triton", x.device, x.dtype)
    fast = backend.forward_blocks(x, blocks, plan, bias=bias, context=context, context_bias=context_bias)
    assert rel_error(fast, reference(blocks, plan, x, bias, context, context_bias)) < 1e-5


def test_triton_backend_model_bias():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = biased_model(depth=1, dim=64, img_size=32).to(device)  # 5 tokens, 2 heads of 32
    model.backend_name = "triton"
    x = torch.randn(1, 3, 32, 32, device=device)
    for width in (1.0, 0.1):
        assert rel_error(model.run(x, width, output="tokens"), model.reference(x, width, output="tokens")) < 1e-5
