"""Analytic FLOP counts of slimmed blocks (FLOP = 2 x multiply-add; matmuls only).

Per block with ``N`` tokens, token width ``d``, ``a = H * d_k'`` (SLIMMING.md section 4)::

    qkv 2*N*d*3a   scores 2*N*N*a   attn@V 2*N*N*a   out-proj 2*N*a*d   ffn 2*N*d*d_h' * 2

Norms, softmax, activations and residual adds are not counted, as in
``torch.utils.flop_counter.FlopCounterMode``, against which the tests check these formulas.
"""

from __future__ import annotations

from .plan import BlockPlan


def block_flops(tokens: int, dim: int, plan: BlockPlan, gated: bool = False) -> int:
    """FLOPs of one self-attention + FFN block at the widths of ``plan`` (a gated FFN has 3 matmuls)."""
    a = plan.attn_width
    attention = 2 * tokens * dim * 3 * a + 2 * 2 * tokens * tokens * a + 2 * tokens * a * dim
    ffn = (3 if gated else 2) * 2 * tokens * dim * plan.mlp_hidden
    return attention + ffn


def patch_embed_flops(patches: int, in_chans: int, patch_size: int, dim: int) -> int:
    """FLOPs of a (never slimmed) patch-embedding convolution over ``patches`` patches."""
    return 2 * patches * in_chans * patch_size * patch_size * dim
