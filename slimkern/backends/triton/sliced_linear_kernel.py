"""Width-sliced linear layer: a GEMM on a prefix view of a full-width weight, with fused epilogues (Triton).

slimkern stores every weight once in the width-prefix layout, so a slimmed weight is ``W[:n_out, :k_in]`` of
the full ``[N_full, K_full]`` tensor. The kernel reads that prefix in place through the full row stride; the
weight is never copied. Epilogues fuse what follows each GEMM of a transformer block:

- bias, then exact (erf) GELU, or the gated FFN: a second accumulator over the value weight (fc3) read like the
  first, ``y = silu(X W^T + b) * (X V^T + b_v)``, so gate and value never round-trip through memory,
- residual add with optional LayerScale: ``y = residual + gamma * y``,
- qkv scatter: GEMM column ``c = j*3H + t*H + h`` of row ``m = b*N + n`` goes to ``out[t, b, h, n, j]``, the
  ``[3, B, H, N, d']`` layout the attention kernel reads.

:func:`launch` is the ``slimkern::triton_sliced_linear`` op's implementation; the checked entry point is
:func:`slimkern.backends.triton.sliced_linear`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..custom_ops import sliced_linear_output

_GROUP_M = 8


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation; bf16/fp16 operands go to the tensor cores as they are."""
    if UPCAST:
        # The interpreter's tl.dot multiplies raw bf16 bits; fp32 operands make it exact.
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _sliced_linear_kernel(
    x_ptr, w_ptr, bias_ptr, v_ptr, vbias_ptr, res_ptr, gamma_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_wn, stride_vn, stride_rm, stride_ym,
    seq_len, heads, stride_yt, stride_yb, stride_yh, stride_yn,
    GELU: tl.constexpr, HAS_BIAS: tl.constexpr, GATED: tl.constexpr, HAS_VALUE_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, HAS_GAMMA: tl.constexpr, QKV_OUT: tl.constexpr, UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One [BLOCK_M, BLOCK_N] tile of act(X[:, :K] @ W[:N, :K]^T + b), then residual/LayerScale, then store."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped tile order: GROUP_M row tiles reuse each weight column tile while it is still in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Out-of-range rows wrap onto valid ones, so loads need no M/N mask and only the kept prefix (rows < N,
    # columns < K) of the full weight is ever read; the wrapped results are never stored.
    x_ptrs = x_ptr + (offs_m % M).to(tl.int64)[:, None] * stride_xm + offs_k[None, :]
    w_rows = (offs_n % N).to(tl.int64)[None, :]
    w_ptrs = w_ptr + w_rows * stride_wn + offs_k[:, None]
    v_ptrs = v_ptr + w_rows * stride_vn + offs_k[:, None]  # the value weight (gated FFN only)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_v = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Whole BLOCK_K steps load without masks (vectorised, pipelined); one masked step finishes an unaligned K.
    k_main = K - K % BLOCK_K
    for _ in range(0, k_main, BLOCK_K):
        a = tl.load(x_ptrs)
        acc = _dot(a, tl.load(w_ptrs), acc, UPCAST, DOT_PRECISION)
        if GATED:
            acc_v = _dot(a, tl.load(v_ptrs), acc_v, UPCAST, DOT_PRECISION)
            v_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if k_main < K:
        k_mask = offs_k < K - k_main
        a = tl.load(x_ptrs, mask=k_mask[None, :], other=0.0)
        acc = _dot(a, tl.load(w_ptrs, mask=k_mask[:, None], other=0.0), acc, UPCAST, DOT_PRECISION)
        if GATED:
            acc_v = _dot(a, tl.load(v_ptrs, mask=k_mask[:, None], other=0.0), acc_v, UPCAST, DOT_PRECISION)

    # Epilogue in fp32 on the accumulators.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if GELU:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    if GATED:
        if HAS_VALUE_BIAS:
            acc_v += tl.load(vbias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        acc = acc * tl.sigmoid(acc) * acc_v
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + offs_m.to(tl.int64)[:, None] * stride_rm + offs_n[None, :], mask=mask, other=0.0)
        if HAS_GAMMA:
            acc = acc * tl.load(gamma_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        acc += res.to(tl.float32)

    if QKV_OUT:
        j = offs_n // (3 * heads)
        t = (offs_n // heads) % 3
        h = offs_n % heads
        row_off = (offs_m // seq_len).to(tl.int64) * stride_yb + (offs_m % seq_len).to(tl.int64) * stride_yn
        col_off = t.to(tl.int64) * stride_yt + h.to(tl.int64) * stride_yh + j
        y_ptrs = y_ptr + row_off[:, None] + col_off[None, :]
    else:
        y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


class GemmConfig(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# GPU tile configurations per dtype, largest first; the heuristic takes the first one that fills every SM.
# 128-row tiles use 8 warps (4 warps spill with this kernel on sm_90). fp32 halves BLOCK_K: 3xTF32 splits each
# operand in two, doubling registers and shared memory per K step.
_HALF_CONFIGS = (
    GemmConfig(128, 128, 64, num_warps=8, num_stages=3),
    GemmConfig(128, 64, 64, num_warps=8, num_stages=4),
    GemmConfig(64, 64, 64, num_warps=4, num_stages=4),
)
CONFIGS = {
    torch.bfloat16: _HALF_CONFIGS,
    torch.float16: _HALF_CONFIGS,
    torch.float32: (
        GemmConfig(128, 128, 32, num_warps=8, num_stages=3),
        GemmConfig(128, 64, 32, num_warps=8, num_stages=3),
        GemmConfig(64, 64, 32, num_warps=4, num_stages=3),
    ),
}
# Interpreter (CPU tensors): it runs programs one after another in numpy, so fewer, mid-sized tiles are fastest.
INTERPRETER_CONFIG = GemmConfig(64, 32, 32, num_warps=4, num_stages=1)


# The qkv scatter store cannot be vectorised (adjacent columns go to different heads): it holds one 64-bit address
# per element, and 128-column tiles then spill registers; the gated FFN holds two accumulators. Those launches take
# tiles of at most this many columns.
NARROW_MAX_BLOCK_N = 64


def candidate_configs(dtype: torch.dtype, narrow: bool) -> tuple[GemmConfig, ...]:
    """The GPU tile configurations the heuristic chooses from for this dtype, largest first; ``narrow`` for the qkv
    scatter and the gated FFN."""
    if dtype not in CONFIGS:
        raise ValueError(f"sliced_linear: no tile configuration for dtype {dtype}")
    return tuple(cfg for cfg in CONFIGS[dtype] if not (narrow and cfg.block_n > NARROW_MAX_BLOCK_N))


def _pick_config(m: int, n: int, k: int, dtype: torch.dtype, narrow: bool, device: torch.device) -> GemmConfig:
    if m < 1 or n < 1 or k < 1:
        raise ValueError(f"sliced_linear: GEMM sizes must be >= 1, got M={m}, N={n}, K={k}")
    configs = candidate_configs(dtype, narrow)
    if device.type == "cpu":
        return INTERPRETER_CONFIG
    if device.type != "cuda":
        raise ValueError(f"sliced_linear: no tile configuration for device {device}")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    for cfg in configs:
        if triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n) >= sms:
            return cfg
    return configs[-1]


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 operands use 3xTF32 (about fp32-accurate on tensor cores)."""
    return "tf32x3" if dtype == torch.float32 else "tf32"


def launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int, k_in: int,
           gelu: bool = False, value_weight: torch.Tensor | None = None, value_bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None, gamma: torch.Tensor | None = None, qkv_heads: int = 0,
           seq_len: int = 0) -> torch.Tensor:
    """Allocate the output (:func:`~slimkern.backends.custom_ops.sliced_linear_output`) and run the kernel on
    arguments already checked (the schema of ``slimkern::triton_sliced_linear``; ``qkv_heads = 0``: no scatter)."""
    out = sliced_linear_output(x, n_out, qkv_heads, seq_len)
    m = x.shape[0]
    if m == 0:
        return out
    gated = value_weight is not None
    cfg = _pick_config(m, n_out, k_in, x.dtype, bool(qkv_heads) or gated, x.device)
    qkv_strides = out.stride()[:4] if qkv_heads else (0, 0, 0, 0)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n_out, cfg.block_n),)
    _sliced_linear_kernel[grid](
        x, weight, out if bias is None else bias, weight if value_weight is None else value_weight,
        out if value_bias is None else value_bias, out if residual is None else residual,
        out if gamma is None else gamma, out,
        m, n_out, k_in,
        x.stride(0), weight.stride(0), 0 if value_weight is None else value_weight.stride(0),
        0 if residual is None else residual.stride(0), out.stride(0),
        seq_len or 1, qkv_heads or 1, *qkv_strides,
        GELU=gelu, HAS_BIAS=bias is not None, GATED=gated, HAS_VALUE_BIAS=value_bias is not None,
        HAS_RESIDUAL=residual is not None, HAS_GAMMA=gamma is not None, QKV_OUT=bool(qkv_heads),
        UPCAST=x.device.type == "cpu", DOT_PRECISION=dot_precision(x.dtype),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=_GROUP_M,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out
