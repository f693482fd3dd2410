"""The width-prefix storage layout: one copy of the weights in which every slimmed slice is a prefix.

The paper keeps the first ``d_k'`` dims of EVERY head. In a checkpoint's own layout those rows are
``3*H`` separate runs of the fused qkv weight, so reading them needs a gather (a copy per width).
slimkern permutes each attention weight ONCE at load time so that head-dim index ``j`` is the
slowest axis. Then the slice for any ``d_k'`` is a plain prefix view:

================================  =================================  ==================================
weight (official layout)          stored index                        kept at ``d_k'``
================================  =================================  ==================================
fused qkv ``[3*H*dk, d]``          row ``j*3H + t*H + h`` (t: q,k,v)   rows ``[:3*H*d']``
separate q, k or v ``[H*dk, d]``   row ``j*H + h``                     rows ``[:H*d']``
out-proj ``[d, H*dk]``             column ``j*H + h``                  columns ``[:, :H*d']``
================================  =================================  ==================================

FFN weights are already prefix-sliced (``fc1`` rows, ``fc2`` columns) and are stored unchanged.
``to_official`` functions invert the permutation exactly (they are used for ``state_dict()``
and by the reference path, which slices in the official layout).
"""

from __future__ import annotations

import torch


def qkv_to_prefix(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Fused qkv weight or bias ``[(t, h, j), ...]`` -> ``[(j, t, h), ...]``."""
    rest = w.shape[1:]
    moved = w.reshape(3, num_heads, head_dim, *rest).movedim(2, 0)
    return moved.reshape(3 * num_heads * head_dim, *rest).contiguous()


def qkv_to_official(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of :func:`qkv_to_prefix`."""
    rest = w.shape[1:]
    moved = w.reshape(head_dim, 3, num_heads, *rest).movedim(0, 2)
    return moved.reshape(3 * num_heads * head_dim, *rest).contiguous()


def heads_rows_to_prefix(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """A separate q, k or v weight or bias ``[(h, j), ...]`` -> ``[(j, h), ...]`` (cross-attention projections)."""
    rest = w.shape[1:]
    return w.reshape(num_heads, head_dim, *rest).transpose(0, 1).reshape(num_heads * head_dim, *rest).contiguous()


def heads_rows_to_official(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of :func:`heads_rows_to_prefix`."""
    rest = w.shape[1:]
    return w.reshape(head_dim, num_heads, *rest).transpose(0, 1).reshape(num_heads * head_dim, *rest).contiguous()


def heads_cols_to_prefix(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Out-projection weight ``[d, (h, j)]`` -> ``[d, (j, h)]``."""
    d = w.shape[0]
    return w.reshape(d, num_heads, head_dim).transpose(1, 2).reshape(d, num_heads * head_dim).contiguous()


def heads_cols_to_official(w: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of :func:`heads_cols_to_prefix`."""
    d = w.shape[0]
    return w.reshape(d, head_dim, num_heads).transpose(1, 2).reshape(d, num_heads * head_dim).contiguous()
