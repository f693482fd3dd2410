"""LayerNorm over the last dim of ``[M, d]`` rows (Triton).

Slimming never touches the token width d, so every norm runs at full width. Inputs are read through their row
stride (``F.layer_norm`` would copy a strided input). The residual add before each norm is already fused into the
preceding GEMM's epilogue, so the norm reads one tensor.

:func:`launch` is the ``slimkern::triton_layer_norm`` op's implementation; the checked entry point is
:func:`slimkern.backends.triton.layer_norm`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..custom_ops import layer_norm_output


@triton.jit
def _layer_norm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, D, eps,
    stride_xm, stride_ym,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """BLOCK_M rows: y = (x - mean(x)) / sqrt(var(x) + eps) * w + b."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < D
    mask = (rows < M)[:, None] & col_mask[None, :]
    rows = rows.to(tl.int64)[:, None]
    # Statistics in fp32 whatever the storage dtype; the two-pass variance avoids E[x^2] - E[x]^2 cancellation.
    x = tl.load(x_ptr + rows * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
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


def launch(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Allocate the contiguous ``[M, d]`` output and run the kernel on arguments already checked (the schema of
    ``slimkern::triton_layer_norm``)."""
    out = layer_norm_output(x)
    m, d = x.shape
    if m == 0 or d == 0:
        return out
    block_d, cfg = _pick_config(d, x.device)
    _layer_norm_kernel[(triton.cdiv(m, cfg.block_m),)](
        x, out if weight is None else weight, out if bias is None else bias, out,
        m, d, float(eps), x.stride(0), out.stride(0),
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_M=cfg.block_m, BLOCK_D=block_d, num_warps=cfg.num_warps,
    )  # fmt: skip
    return out
