"""Analytic FLOP counts of slimmed blocks (FLOP = 2 x multiply-add; matmuls only).

Per block with ``N`` tokens, token width ``d``, ``a = H * d_k'`` (the paper's counting)::

    qkv 2*N*d*3a   scores 2*N*N*a   attn@V 2*N*N*a   out-proj 2*N*a*d   ffn 2*N*d*d_h' * 2

A cross-attention sublayer (queries from the ``N`` tokens, keys and values from ``M`` context tokens) adds::

    q 2*N*d*a   k, v 2*2*M*d*a   scores 2*N*M*a   attn@V 2*N*M*a   out-proj 2*N*a*d

Norms, softmax, activations, attention biases and residual adds are not counted, as in
``torch.utils.flop_counter.FlopCounterMode``, against which the tests check these formulas.
"""

from __future__ import annotations

from collections.abc import Iterable

from .blocks import Block
from .plan import BlockPlan, SlimPlan


def block_flops(tokens: int, dim: int, plan: BlockPlan, gated: bool = False, context_tokens: int | None = None
                ) -> int:
    """FLOPs of one self-attention + FFN block at the widths of ``plan`` (a gated FFN has 3 matmuls); with
    ``context_tokens``, plus a cross-attention sublayer over that many context tokens."""
    a = plan.attn_width
    attention = 2 * tokens * dim * 3 * a + 2 * 2 * tokens * tokens * a + 2 * tokens * a * dim
    ffn = (3 if gated else 2) * 2 * tokens * dim * plan.mlp_hidden
    cross = 0 if context_tokens is None else cross_attention_flops(tokens, context_tokens, dim, plan)
    return attention + cross + ffn


def cross_attention_flops(tokens: int, context_tokens: int, dim: int, plan: BlockPlan) -> int:
    """FLOPs of a slimmed cross-attention sublayer: ``tokens`` queries over ``context_tokens`` keys and values."""
    a, n, m = plan.attn_width, tokens, context_tokens
    return 2 * n * dim * a + 2 * 2 * m * dim * a + 2 * 2 * n * m * a + 2 * n * a * dim


def stack_flops(blocks: Iterable[Block], plan: SlimPlan, tokens: int, dim: int, context_tokens: int | None = None
                ) -> int:
    """FLOPs of a stack of blocks at ``plan`` over ``tokens`` tokens; cross-attention blocks read
    ``context_tokens`` context tokens (default: as many as ``tokens``)."""
    context = tokens if context_tokens is None else context_tokens
    return sum(block_flops(tokens, dim, bp, gated=block.spec.ffn == "swiglu",
                           context_tokens=context if block.spec.cross_attn else None)
               for block, bp in zip(blocks, plan.blocks, strict=True))


def patch_embed_flops(patches: int, in_chans: int, patch_size: int, dim: int) -> int:
    """FLOPs of a (never slimmed) patch-embedding convolution over ``patches`` patches."""
    return 2 * patches * in_chans * patch_size * patch_size * dim
