"""The baseline every slimmed forward is judged against: a materialised dense copy of the slimmed
weights (contiguous, official layout), run with plain PyTorch the way timm runs a ViT.

This is what a user without slimkern would do: copy the kept rows and columns out of the checkpoint
for each width (one weight copy per width) and run an ordinary dense model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import slimkern
from slimkern.plan import SlimPlan
from slimkern.reference import kept_head_dims


def materialise(model: slimkern.SlimModel, plan: SlimPlan) -> list[dict[str, torch.Tensor]]:
    """Contiguous per-block copies of the slimmed weights in the official (timm) layout."""
    blocks = []
    for block, bp in zip(model.blocks, plan.blocks, strict=True):
        idx = kept_head_dims(bp.num_heads, bp.full_head_dim, bp.head_dim).to(model.device)
        inner = bp.num_heads * bp.full_head_dim
        rows = torch.cat([idx, inner + idx, 2 * inner + idx])
        qkv_bias = block.official("attn.qkv.bias")
        blocks.append({
            "qkv_w": block.official("attn.qkv.weight")[rows].contiguous(),
            "qkv_b": None if qkv_bias is None else qkv_bias[rows].contiguous(),
            "proj_w": block.official("attn.proj.weight")[:, idx].contiguous(),
            "fc1_w": block.mlp.fc1.weight[: bp.mlp_hidden].contiguous(),
            "fc1_b": block.mlp.fc1.bias[: bp.mlp_hidden].contiguous(),
            "fc2_w": block.mlp.fc2.weight[:, : bp.mlp_hidden].contiguous(),
        })
    return blocks


def dense_forward(model: slimkern.SlimModel, dense: list[dict[str, torch.Tensor]], plan: SlimPlan,
                  x: torch.Tensor) -> torch.Tensor:
    """Pooled embedding of ``x`` through the dense copies (timm's Attention/Mlp math)."""
    with torch.no_grad():
        t = model.embed(x)
        for block, bp, w in zip(model.blocks, plan.blocks, dense, strict=True):
            eps, d = block.spec.norm_eps, model.dim
            b, n, _ = t.shape
            h = F.layer_norm(t, (d,), block.norm1.weight, block.norm1.bias, eps)
            q, k, v = F.linear(h, w["qkv_w"], w["qkv_b"]).reshape(b, n, 3, bp.num_heads, bp.head_dim) \
                .permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v, scale=bp.scale).transpose(1, 2).reshape(b, n, -1)
            y = F.linear(o, w["proj_w"], block.attn.proj.bias)
            t = t + (y * block.ls1.gamma if block.ls1 is not None else y)
            h = F.layer_norm(t, (d,), block.norm2.weight, block.norm2.bias, eps)
            y = F.linear(F.gelu(F.linear(h, w["fc1_w"], w["fc1_b"])), w["fc2_w"], block.mlp.fc2.bias)
            t = t + (y * block.ls2.gamma if block.ls2 is not None else y)
        t = F.layer_norm(t, (model.dim,), model.norm.weight, model.norm.bias, model.norm_eps)
        return model.pool(t)
