"""The reference path: the paper's slimming written out literally, for checking every fast path.

It works in the checkpoint's OFFICIAL layout (it undoes the storage permutation), gathers the
kept rows and columns by the paper's index set (README, Slimming semantics) into materialised copies, and
spells attention, LayerNorm and GELU out as formulas. It shares only the weights and the model's
stem (which is never slimmed) with the fast paths. Run it in float64.

:data:`REFERENCE` offers it with a backend's interface (``forward_blocks``, ``layer_norm``), so a model's
``encode`` is written once for both paths.
"""

from __future__ import annotations

import math

import torch

from .backends import Backend
from .blocks import Block
from .plan import BlockPlan


def kept_head_dims(num_heads: int, head_dim: int, kept: int) -> torch.Tensor:
    """Index set ``I``: the first ``kept`` dims of every head, ``union_h [h*d_k, h*d_k + d_k')``."""
    return torch.tensor([h * head_dim + j for h in range(num_heads) for j in range(kept)])


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as ``nn.GELU()``."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _heads(y: torch.Tensor, heads: int, kept: int) -> torch.Tensor:
    """``[B, N, (h, j)]`` -> ``[B, H, N, d_k']``."""
    return y.reshape(*y.shape[:2], heads, kept).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d_k') + bias) v`` per head -> ``[B, N, (h, j)]`` (the index set's order)."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias  # [H, Nq, Nk], the same for every image
    o = torch.softmax(scores, dim=-1) @ v
    return o.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def attention(x: torch.Tensor, block: Block, plan: BlockPlan, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Slimmed multi-head self-attention of the normed input ``x`` ``[B, N, d]``, optional logits ``bias``."""
    heads, full, kept = plan.num_heads, plan.full_head_dim, plan.head_dim
    dtype = x.dtype
    idx = kept_head_dims(heads, full, kept)
    inner = heads * full
    w_qkv = block.official("attn.qkv.weight").to(dtype)
    b_qkv = block.official("attn.qkv.bias")
    b_qkv = torch.zeros(3 * inner, dtype=dtype, device=x.device) if b_qkv is None else b_qkv.to(dtype)

    def project(chunk: int) -> torch.Tensor:  # q, k or v: [B, H, N, d_k']
        rows = chunk * inner + idx
        return _heads(x @ w_qkv[rows].T + b_qkv[rows], heads, kept)

    o = _attend(project(0), project(1), project(2), bias)
    w_out = block.official("attn.proj.weight").to(dtype)[:, idx]
    return o @ w_out.T + _bias(block.attn.proj, x)


def cross_attention(x: torch.Tensor, context: torch.Tensor, block: Block, plan: BlockPlan,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Slimmed cross-attention: queries from the normed ``x`` ``[B, N, d]``, keys and values from the normed
    ``context`` ``[B, M, d]``; rows ``I`` of each separate projection, columns ``I`` of the out-projection."""
    heads, kept = plan.num_heads, plan.head_dim
    idx = kept_head_dims(heads, plan.full_head_dim, kept)

    def project(name: str, t: torch.Tensor) -> torch.Tensor:
        w = block.official(f"cross_attn.{name}.weight").to(t.dtype)[idx]
        b = block.official(f"cross_attn.{name}.bias")
        return _heads(t @ w.T + (0.0 if b is None else b.to(t.dtype)[idx]), heads, kept)

    o = _attend(project("q", x), project("k", context), project("v", context), bias)
    w_out = block.official("cross_attn.proj.weight").to(x.dtype)[:, idx]
    return o @ w_out.T + _bias(block.cross_attn.proj, x)


def _bias(layer, x: torch.Tensor, units: int | None = None) -> torch.Tensor | float:
    """A layer's bias (first ``units`` entries) in ``x.dtype``, or 0 for a bias-free layer."""
    return 0.0 if layer.bias is None else layer.bias.to(x.dtype)[:units].clone()


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


def mlp(x: torch.Tensor, block: Block, plan: BlockPlan) -> torch.Tensor:
    """Slimmed FFN: ``gelu(x W1[:d_h']^T + b1[:d_h']) W2[:, :d_h']^T + b2``; gated FFNs slim the gate
    (fc1) and value (fc3) projections to the same first ``d_h'`` units."""
    units = plan.mlp_hidden
    fc1, fc2, fc3 = block.mlp.fc1, block.mlp.fc2, block.mlp.fc3

    def rows(layer) -> torch.Tensor:
        return x @ layer.weight.to(x.dtype)[:units].clone().T + _bias(layer, x, units)

    hidden = gelu(rows(fc1)) if fc3 is None else silu(rows(fc1)) * rows(fc3)
    return hidden @ fc2.weight.to(x.dtype)[:, :units].clone().T + _bias(fc2, x)


def block_forward(x: torch.Tensor, block: Block, plan: BlockPlan, bias: torch.Tensor | None = None,
                  context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Pre-norm block with optional LayerScale, attention biases and cross-attention sublayer."""
    eps, dtype = block.spec.norm_eps, x.dtype

    def norm(t: torch.Tensor, params) -> torch.Tensor:
        return layer_norm(t, params.weight.to(dtype), params.bias.to(dtype), eps)

    def scaled(y: torch.Tensor, layer_scale) -> torch.Tensor:
        return y if layer_scale is None else y * layer_scale.gamma.to(dtype)

    x = x + scaled(attention(norm(x, block.norm1), block, plan, bias), block.ls1)
    if block.cross_attn is not None:
        x = x + cross_attention(norm(x, block.norm_cross), norm(context, block.norm_cross), block, plan, context_bias)
    return x + scaled(mlp(norm(x, block.norm2), block, plan), block.ls2)


class Reference(Backend):
    """The reference path behind a backend's interface (not registered: ``model.reference`` uses it)."""

    name = "reference"

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        return block_forward(x, block, plan, bias, context, context_bias)

    def layer_norm(self, x: torch.Tensor, norm, eps: float) -> torch.Tensor:
        return layer_norm(x, norm.weight.to(x.dtype), norm.bias.to(x.dtype), eps)


REFERENCE = Reference()
