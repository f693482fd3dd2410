"""The reference path: the paper's slimming written out literally, for checking every fast path.

It works in the checkpoint's OFFICIAL layout (it undoes the storage permutation), gathers the
kept rows and columns by the index set of SLIMMING.md section 2 into materialised copies, and
spells attention, LayerNorm and GELU out as formulas. It shares only the weights and the model's
stem (which is never slimmed) with the fast paths. Run it in float64.
"""

from __future__ import annotations

import math

import torch

from .blocks import Block
from .plan import BlockPlan, SlimPlan


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


def attention(x: torch.Tensor, block: Block, plan: BlockPlan) -> torch.Tensor:
    """Slimmed multi-head self-attention of the normed input ``x`` ``[B, N, d]``."""
    batch, tokens, _ = x.shape
    heads, full, kept = plan.num_heads, plan.full_head_dim, plan.head_dim
    dtype = x.dtype
    idx = kept_head_dims(heads, full, kept)
    inner = heads * full
    w_qkv = block.official("attn.qkv.weight").to(dtype)
    b_qkv = block.official("attn.qkv.bias")
    b_qkv = torch.zeros(3 * inner, dtype=dtype, device=x.device) if b_qkv is None else b_qkv.to(dtype)

    def project(chunk: int) -> torch.Tensor:  # q, k or v: [B, H, N, d_k']
        rows = chunk * inner + idx
        y = x @ w_qkv[rows].T + b_qkv[rows]
        return y.reshape(batch, tokens, heads, kept).transpose(1, 2)

    q, k, v = project(0), project(1), project(2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(kept)
    probs = torch.softmax(scores, dim=-1)
    o = (probs @ v).transpose(1, 2).reshape(batch, tokens, heads * kept)  # columns (h, j) = I order
    w_out = block.official("attn.proj.weight").to(dtype)[:, idx]
    return o @ w_out.T + _bias(block.attn.proj, x)


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


def block_forward(x: torch.Tensor, block: Block, plan: BlockPlan) -> torch.Tensor:
    """Pre-norm block with optional LayerScale."""
    eps, dtype = block.spec.norm_eps, x.dtype

    def scaled(y: torch.Tensor, layer_scale) -> torch.Tensor:
        return y if layer_scale is None else y * layer_scale.gamma.to(dtype)

    h = layer_norm(x, block.norm1.weight.to(dtype), block.norm1.bias.to(dtype), eps)
    x = x + scaled(attention(h, block, plan), block.ls1)
    h = layer_norm(x, block.norm2.weight.to(dtype), block.norm2.bias.to(dtype), eps)
    return x + scaled(mlp(h, block, plan), block.ls2)


def reference_forward(model, x: torch.Tensor, plan: SlimPlan, output: str, **inputs) -> torch.Tensor:
    """Whole slimmed encoder in ``x.dtype``: stem, blocks, final norm, pooling."""
    tokens = model.embed(x, **inputs)
    for block, block_plan in zip(model.blocks, plan.blocks, strict=True):
        tokens = block_forward(tokens, block, block_plan)
    if model.norm is not None:
        tokens = layer_norm(tokens, model.norm.weight.to(x.dtype), model.norm.bias.to(x.dtype), model.norm_eps)
    return model.pool(tokens) if output == "pooled" else tokens
