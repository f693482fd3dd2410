"""The cross-attention sublayer on a kernel backend's ops: the same data flow for the ``triton`` and ``cuda`` backends.

Each backend passes its own ``layer_norm``, ``sliced_linear`` and ``attention``; all three take the calls below
(``layer_norm(x, weight, bias, eps)``, ``sliced_linear(x, weight, bias, n_out=, k_in=, residual=)``,
``attention(q, k, v, scale=, bias=)`` writing the out-projection's ``[B, Nq, d'*H]`` layout by default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..blocks import Block
from ..plan import BlockPlan


def cross_attention(rows: torch.Tensor, context: torch.Tensor, block: Block, plan: BlockPlan,
                    bias: torch.Tensor | None, batch: int, *, layer_norm: Callable[..., torch.Tensor],
                    sliced_linear: Callable[..., torch.Tensor], attention: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``rows + proj(attention(q(n(rows)), k(n(context)), v(n(context))))`` with ``n = norm_cross``."""
    spec, cross, a = block.spec, block.cross_attn, plan.attn_width
    dim = rows.shape[1]
    norm = block.norm_cross
    h = layer_norm(rows, norm.weight, norm.bias, spec.norm_eps)
    c = layer_norm(context.reshape(-1, dim).contiguous(), norm.weight, norm.bias, spec.norm_eps)

    def project(layer, t: torch.Tensor) -> torch.Tensor:
        # stored rows (j, h): the GEMM writes columns j*H + h; the attention kernel reads [B, H, N, d'] with unit
        # stride along d', so the activation (never the weight) is re-laid out
        y = sliced_linear(t, layer.weight, layer.bias, n_out=a, k_in=dim)
        return y.view(batch, -1, plan.head_dim, plan.num_heads).permute(0, 3, 1, 2).contiguous()

    o = attention(project(cross.q, h), project(cross.k, c), project(cross.v, c), scale=plan.scale, bias=bias)
    # a view, not a copy: the [B, Nq, d'*H] output's padded rows still merge into [B*Nq, d'*H] rows
    return sliced_linear(o.view(rows.shape[0], a), cross.proj.weight, cross.proj.bias, n_out=dim, k_in=a,
                         residual=rows)
