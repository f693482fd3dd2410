"""Fused attention at any reduced head dimension d' (1..256), flash-attention style.

Slimming keeps the first d' dims of every head, so d' is often not a power of two (1, 6, 21, ...). The kernel pads
the head dim to a power of two >= 16 inside registers with masked loads; q, k, v are read in place through their
strides (views of the qkv GEMM's ``[3, B, H, N, d']`` output) and are never padded or copied in memory. The
output is written straight in the ``[B, N, d'*H]`` (column ``j*H + h``) layout the out-projection reads.

:func:`launch` is the ``slimkern::triton_attention`` op's implementation; the checked entry point is
:func:`slimkern.backends.triton.attention`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..custom_ops import attention_output
from .sliced_linear_kernel import dot_precision

_LOG2E = tl.constexpr(1.4426950408889634)
MAX_HEAD_DIM = 256


@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, o_ptr,
    H, Nq, Nk, D, qk_scale,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_bh, stride_bm, stride_bn,
    stride_ob, stride_oh, stride_on, stride_oj,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M block of queries of one (batch, head): online softmax over BLOCK_N blocks of keys."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < D  # head dim padded in registers only

    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q_ptrs = q_ptr + b64 * stride_qb + h64 * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=(offs_m < Nq)[:, None] & d_mask[None, :], other=0.0)
    k_ptrs = k_ptr + b64 * stride_kb + h64 * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None]  # K^T tile
    v_ptrs = v_ptr + b64 * stride_vb + h64 * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :]
    if HAS_BIAS:
        bias_rows = bias_ptr + h64 * stride_bh + offs_m[:, None] * stride_bm
    if UPCAST:
        # The interpreter's tl.dot multiplies raw bf16 bits; fp32 operands make it exact.
        q = q.to(tl.float32)

    # Running max (base-2 logits), running denominator and unnormalised output: all fp32.
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, Nk, BLOCK_N):
        n_mask = offs_n < Nk - n0
        k = tl.load(k_ptrs, mask=d_mask[:, None] & n_mask[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # Scores in base 2: exp(x) = exp2(x * log2(e)); the scale and the bias carry the log2(e) factor.
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        if HAS_BIAS:
            s_mask = (offs_m < Nq)[:, None] & n_mask[None, :]
            bias = tl.load(bias_rows + (n0 + offs_n)[None, :] * stride_bn, mask=s_mask, other=0.0)
            s += bias.to(tl.float32) * _LOG2E
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn

    acc = acc / l_i[:, None]
    o_ptrs = o_ptr + b64 * stride_ob + h64 * stride_oh
    o_ptrs += offs_m.to(tl.int64)[:, None] * stride_on + offs_d[None, :] * stride_oj
    tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=(offs_m < Nq)[:, None] & d_mask[None, :])


class AttentionConfig(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# GPU configurations per dtype and padded head dim (BLOCK_D), largest query block first: the heuristic takes the
# first that fills every SM (few tokens or a small batch need smaller blocks). 8 warps wherever 4 would spill.
# fp32 runs 3xTF32, which doubles operand registers and shared memory, hence smaller key blocks there.
_HALF_CONFIGS = {
    **dict.fromkeys((16, 32, 64, 128), (AttentionConfig(128, 64, 8, 3), AttentionConfig(64, 64, 4, 3))),
    256: (AttentionConfig(64, 64, 8, 2), AttentionConfig(64, 32, 8, 2)),
}
CONFIGS = {
    torch.bfloat16: _HALF_CONFIGS,
    torch.float16: _HALF_CONFIGS,
    torch.float32: {
        16: (AttentionConfig(64, 64, 4, 3),),
        32: (AttentionConfig(64, 64, 4, 3),),
        64: (AttentionConfig(128, 32, 8, 3),),
        128: (AttentionConfig(128, 32, 8, 2),),
        256: (AttentionConfig(64, 16, 4, 1),),
    },
}
# Interpreter (CPU tensors): programs run one after another in numpy, so few mid-sized blocks are fastest.
INTERPRETER_CONFIG = AttentionConfig(64, 64, 4, 1)


def padded_head_dim(d: int) -> int:
    """Register padding of the head dim: the next power of two, at least 16 (the tensor-core K minimum)."""
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim d'={d} outside the supported range [1, {MAX_HEAD_DIM}]")
    return max(16, triton.next_power_of_2(d))


# The bias tile is loaded element by element (its rows are rarely 16-element aligned), one address per element:
# with a bias, key blocks of at most this many columns keep it in registers.
BIAS_MAX_BLOCK_N = 32


def candidate_configs(dtype: torch.dtype, block_d: int, has_bias: bool) -> tuple[AttentionConfig, ...]:
    """The GPU configurations the heuristic chooses from, largest query block first."""
    if dtype not in CONFIGS or block_d not in CONFIGS[dtype]:
        raise ValueError(f"attention: no configuration for dtype {dtype} and padded head dim {block_d}")
    configs = CONFIGS[dtype][block_d]
    if has_bias:
        configs = tuple(dict.fromkeys(cfg._replace(block_n=min(cfg.block_n, BIAS_MAX_BLOCK_N)) for cfg in configs))
    return configs


def _pick_config(
    n_q: int, batch_heads: int, block_d: int, dtype: torch.dtype, has_bias: bool, device: torch.device
) -> AttentionConfig:
    configs = candidate_configs(dtype, block_d, has_bias)
    if device.type == "cpu":
        return INTERPRETER_CONFIG
    if device.type != "cuda":
        raise ValueError(f"attention: no configuration for device {device}")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    for cfg in configs:
        if triton.cdiv(n_q, cfg.block_m) * batch_heads >= sms:
            return cfg
    return configs[-1]


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """Allocate the ``[B, Nq, d'*H]`` output (:func:`~slimkern.backends.custom_ops.attention_output`) and run the
    kernel on arguments already checked (the schema of ``slimkern::triton_attention``)."""
    out = attention_output(q)
    batch, heads, n_q, d = q.shape
    if batch * heads * n_q == 0:
        return out
    o_strides = (out.stride(0), out.stride(2), out.stride(1), out.stride(2) * heads)  # (b, n, j, h) at col j*H + h
    b_strides = (0, 0, 0) if bias is None else bias.stride()
    block_d = padded_head_dim(d)
    cfg = _pick_config(n_q, batch * heads, block_d, q.dtype, bias is not None, q.device)
    grid = (triton.cdiv(n_q, cfg.block_m), batch * heads)
    _attention_kernel[grid](
        q, k, v, out if bias is None else bias, out,
        heads, n_q, k.shape[2], d, float(scale) * _LOG2E.value,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        *b_strides, *o_strides,
        HAS_BIAS=bias is not None, UPCAST=q.device.type == "cpu",
        DOT_PRECISION=dot_precision(q.dtype),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return out
