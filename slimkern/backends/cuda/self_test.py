"""The ``cuda`` backend's self-test: every op once on small random inputs against PyTorch, per device.

A build that compiles but computes wrong (a new GPU architecture, a toolkit bug) must not be picked: the backend
reports the first failing op as its unavailability reason and ``backend="auto"`` falls through to ``triton``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Norm-wise relative error vs an fp32 PyTorch computation that the self-test accepts (bf16 rounding is ~4e-3).
SELF_TEST_TOLERANCE = 2e-2


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def self_test(device: torch.device) -> str | None:
    """Run every op once in bf16 and fp16 on small random inputs against PyTorch: odd sizes, slimmed prefixes, both
    load paths (a 16-byte aligned and an offset view), every epilogue, attention with a bias and ``Nq != Nk``.

    Returns ``None`` when all agree, else a line naming the first failing op, its dtype and its error.
    """
    for dtype in (torch.bfloat16, torch.float16):
        why = _self_test_dtype(device, dtype)
        if why:
            return why
    return None


def _bnjh(o: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, d']`` -> the attention op's ``[B, N, d'*H]`` layout (column ``j*H + h``)."""
    return o.permute(0, 2, 3, 1).flatten(2)


def _self_test_dtype(device: torch.device, dtype: torch.dtype) -> str | None:
    from . import ops  # registers the ops: on first use, not when the backend is imported

    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    x, w, wv, b, r, gamma = rand(37, 48), rand(50, 48), rand(50, 48), rand(50), rand(37, 45), rand(45)
    x_offset = rand(37, 49)[:, 1:]  # not 16-byte aligned: the element-wise load path
    ref = F.linear(x[:, :40].float(), w[:45, :40].float(), b[:45].float())
    ref_offset = F.linear(x_offset[:, :40].float(), w[:45, :40].float(), b[:45].float())
    value = F.linear(x[:, :40].float(), wv[:45, :40].float())
    q, k, v, bias = rand(2, 3, 37, 6), rand(2, 3, 21, 6), rand(2, 3, 21, 6), rand(3, 37, 21)
    att = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 0.4 + bias.float(), -1) @ v.float()
    # the paths a real model takes: several 64 x 64 tiles over 7 K stages with a tail, the 128 x 128 tiles (used
    # once they alone fill every SM: 16 x 9 tiles >= 132 SMs), and key tiles walked with an online softmax
    x_long, w_long = rand(197, 200), rand(300, 208)
    long_ref = F.gelu(F.linear(x_long.float(), w_long[:260, :200].float(), b[:1].float().expand(260)))
    x_big, w_big = rand(2048, 200), rand(1160, 208)
    big_ref = F.linear(x_big.float(), w_big[:1152, :200].float())
    q64, k64, v64 = rand(1, 2, 197, 64), rand(1, 2, 197, 64), rand(1, 2, 197, 64)
    q100, k100, v100 = rand(1, 1, 130, 100), rand(1, 1, 197, 100), rand(1, 1, 197, 100)

    def sdpa(q_, k_, v_, scale):
        return torch.softmax(q_.float() @ k_.float().transpose(-1, -2) * scale, -1) @ v_.float()

    qkv_w = rand(3 * 3 * 8, 48)
    qkv_ref = F.linear(x[:36].float(), qkv_w[:36].float()).view(2, 18, 4, 3, 3).permute(3, 0, 4, 1, 2)
    checks = {
        "sliced_linear (bias, gelu)": lambda: (
            ops.sliced_linear(x_offset, w, b, n_out=45, k_in=40, activation="gelu"), F.gelu(ref_offset)),
        "sliced_linear (residual, LayerScale)": lambda: (
            ops.sliced_linear(x, w, b, n_out=45, k_in=40, residual=r, gamma=gamma), r.float() + gamma.float() * ref),
        "sliced_linear (gated FFN)": lambda: (ops.sliced_linear(x, w, b, n_out=45, k_in=40, value_weight=wv),
                                              F.silu(ref) * value),
        "sliced_linear (qkv scatter)": lambda: (
            ops.sliced_linear(x[:36], qkv_w, n_out=36, k_in=48, qkv_heads=3, seq_len=18), qkv_ref),
        "sliced_linear (64 x 64 tiles, 7 K stages, gelu)": lambda: (
            ops.sliced_linear(x_long, w_long, b[:1].expand(300).contiguous(), n_out=260, k_in=200, activation="gelu"),
            long_ref),
        "sliced_linear (128 x 128 tiles)": lambda: (ops.sliced_linear(x_big, w_big, None, n_out=1152, k_in=200),
                                                    big_ref),
        "attention (d'=6, bias, cross)": lambda: (ops.attention(q, k, v, scale=0.4, bias=bias), _bnjh(att)),
        "attention (d'=64, 197 tokens)": lambda: (ops.attention(q64, k64, v64, scale=0.125),
                                                  _bnjh(sdpa(q64, k64, v64, 0.125))),
        "attention (d'=100, 130 x 197, cross)": lambda: (ops.attention(q100, k100, v100, scale=0.1),
                                                         _bnjh(sdpa(q100, k100, v100, 0.1))),
        "layer_norm": lambda: (ops.layer_norm(x, w[0], b[:48], 1e-6),
                               F.layer_norm(x.float(), (48,), w[0].float(), b[:48].float(), 1e-6)),
    }
    for name, check in checks.items():
        label = f"{name}, {str(dtype).removeprefix('torch.')}"
        try:
            with torch.cuda.device(device):  # the kernels launch on the current device's stream
                out, expected = check()
            err = _rel_error(out, expected)
        except Exception as exc:  # a launch or build failure is a verdict too
            return f"self-test of {label} raised {type(exc).__name__}: {exc}"
        if not err < SELF_TEST_TOLERANCE:
            return f"self-test of {label} failed: relative error {err:.2e} >= {SELF_TEST_TOLERANCE:.0e}"
    return None
