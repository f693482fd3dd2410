"""LayerNorm over the last dim, optionally fused with the residual add that precedes it.

Slimming never touches the token width d, so every norm runs at full width. In a pre-norm block the residual
stream update and the next norm read the same row: ``s = x + residual; y = LN(s)`` is done in one pass, with
``s`` written once. Inputs are read through their row stride (``F.layer_norm`` would copy a strided input).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..base import check_layer_norm, check_lead

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _layer_norm_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, s_ptr,
    M, D, eps,
    stride_xm, stride_rm, stride_ym, stride_sm,
    HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """BLOCK_M rows: s = x (+ residual); y = (s - mean(s)) / sqrt(var(s) + eps) * w + b."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = (rows < M)[:, None] & col_mask[None, :]
    rows = rows.to(tl.int64)[:, None]
    # Statistics in fp32 whatever the storage dtype; the two-pass variance avoids E[x^2] - E[x]^2 cancellation.
    x = tl.load(x_ptr + rows * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(r_ptr + rows * stride_rm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(s_ptr + rows * stride_sm + cols[None, :], x.to(s_ptr.dtype.element_ty), mask=mask)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    y = xc * rstd[:, None]
    if HAS_WEIGHT:
        y *= tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows * stride_ym + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


class NormConfig(NamedTuple):
    block_m: int
    num_warps: int


# GPU configurations: padded row width BLOCK_D -> rows per program and warps (about 8-16 values per thread;
# narrow rows share a program so each one still moves a few KB).
CONFIGS = {
    64: NormConfig(16, 2),
    128: NormConfig(8, 2),
    256: NormConfig(4, 2),
    512: NormConfig(2, 4),
    1024: NormConfig(1, 4),
    2048: NormConfig(1, 8),
    4096: NormConfig(1, 16),
    8192: NormConfig(1, 16),
}
# Interpreter (CPU tensors): programs run one after another in numpy, so many rows per program are fastest.
INTERPRETER_CONFIG = NormConfig(32, 4)


def _pick_config(d: int, device: torch.device) -> tuple[int, NormConfig]:
    """(BLOCK_D, config) for rows of d features."""
    block_d = max(min(CONFIGS), triton.next_power_of_2(d))
    if block_d not in CONFIGS:
        raise ValueError(f"layer_norm: d={d} features exceeds the largest supported row, {max(CONFIGS)}")
    if device.type == "cpu":
        return block_d, INTERPRETER_CONFIG
    if device.type != "cuda":
        raise ValueError(f"layer_norm: no configuration for device {device}")
    return block_d, CONFIGS[block_d]


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (s - mean(s)) / sqrt(var(s) + eps) * weight + bias`` per row, with ``s = x`` or ``s = x + residual``.

    Args:
        x: ``[M, d]``, fp32/bf16/fp16, any row stride, last-dim stride 1, ``d <= 8192``.
        weight, bias: ``[d]`` in the dtype of x, or None (no scale / no shift: bias-free norms).
        eps: added to the biased variance.
        residual: optional ``[M, d]`` added to x before the norm.
        out: optional preallocated ``[M, d]`` output for y; residual_out: the same for s (only with residual).

    Returns:
        ``y`` without residual, ``(y, s)`` with it; both ``[M, d]`` in the dtype of x. Mean and variance are fp32;
        y is computed from the fp32 sum, s is rounded to the dtype of x once, on store.

    Raises:
        TypeError: non-tensor inputs, non-real eps, unsupported or mixed dtypes.
        ValueError: bad shapes, strides, devices or d too large.

    Equivalent PyTorch::

        s = x if residual is None else x + residual
        y = F.layer_norm(s, (d,), weight, bias, eps)
    """
    op = "layer_norm"
    check_lead(op, "x", x, _DTYPES, "Triton")
    check_layer_norm(op, x, weight, bias, eps, residual=residual, out=out, residual_out=residual_out,
                     max_width=max(CONFIGS))
    dtype, device = x.dtype, x.device
    m, d = x.shape
    if residual is not None and residual_out is None:
        residual_out = torch.empty((m, d), dtype=dtype, device=device)
    if out is None:
        out = torch.empty((m, d), dtype=dtype, device=device)

    block_d, cfg = _pick_config(d, device)
    if m > 0 and d > 0:
        _layer_norm_kernel[(triton.cdiv(m, cfg.block_m),)](
            x, out if residual is None else residual, out if weight is None else weight,
            out if bias is None else bias, out, out if residual_out is None else residual_out,
            m, d, float(eps),
            x.stride(0), 0 if residual is None else residual.stride(0), out.stride(0),
            0 if residual_out is None else residual_out.stride(0),
            HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
            BLOCK_M=cfg.block_m, BLOCK_D=block_d, num_warps=cfg.num_warps,
        )  # fmt: skip
    return out if residual is None else (out, residual_out)
