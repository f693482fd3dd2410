"""CUDA attention against a float64 PyTorch reference (needs a GPU). Mirrors test_triton_attention.py: d' = 1, 6,
21, 64 (full), 100 and 256, cross attention (Nq != Nk), an additive bias in fp32 or the input dtype, strided
q/k/v views, both output layouts, NaN-poisoned outputs, and the qkv GEMM -> attention -> out-projection chain.
"""

from __future__ import annotations

import math

import pytest
import torch

from slimkern.backends.cuda import attention, sliced_linear
from tests.backends.kernel_checks import TOL, assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


def _reference(q, k, v, scale, bias=None) -> torch.Tensor:
    """[B, H, Nq, d'] in float64."""
    s = q.double() @ k.double().transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias.double()
    return torch.softmax(s, dim=-1) @ v.double()


def _to_bnjh(o: torch.Tensor) -> torch.Tensor:
    b, h, n, d = o.shape
    return o.permute(0, 2, 3, 1).reshape(b, n, d * h)


def _qkv(batch, heads, n_q, n_k, d, dtype, layout):
    """q [B, H, Nq, d'], k/v [B, H, Nk, d'] as strided views, never contiguous copies."""
    if layout == "qkv":  # views of the qkv GEMM's [3, B, H, N, d'] output
        n = max(n_q, n_k)
        qkv = torch.randn(3, batch, heads, n, d, device=DEVICE).to(dtype)
        return qkv[0, :, :, :n_q], qkv[1, :, :, :n_k], qkv[2, :, :, :n_k]
    q = torch.randn(batch, n_q, heads, d + 3, device=DEVICE).to(dtype)[..., :d].transpose(1, 2)
    kv = torch.randn(2, batch, n_k, heads, d + 5, device=DEVICE).to(dtype)[..., :d].transpose(2, 3)
    return q, kv[0], kv[1]


# (B, H, Nq, Nk, d', bias, layout): blocks are 64 queries x 64 keys (32 keys at d' > 128), so 197 tokens take
# 4 key tiles, the last one partial.
CASES = [
    (2, 3, 17, 17, 1, None, "qkv"),
    (2, 3, 197, 197, 6, "fp32", "qkv"),
    (1, 2, 197, 197, 21, None, "strided"),
    (2, 12, 197, 197, 64, "same", "qkv"),
    (1, 2, 1025, 1025, 64, None, "qkv"),
    (1, 1, 197, 197, 6, "same", "strided"),
    (2, 2, 5, 33, 21, None, "strided"),
    (2, 2, 70, 130, 100, "fp32", "qkv"),
    (1, 2, 80, 97, 256, "same", "qkv"),
]
PARAMS = [(*c, "bnjh") for c in CASES] + [(*c, "bhnd") for c in CASES if c[4] in (1, 21, 256)]


@DTYPES
@pytest.mark.parametrize(
    "batch, heads, n_q, n_k, d, bias_kind, layout, out_layout",
    PARAMS,
    ids=[f"B{p[0]}H{p[1]}-{p[2]}x{p[3]}-d{p[4]}-bias{p[5]}-{p[6]}-{p[7]}" for p in PARAMS],
)
def test_matches_reference(dtype, batch, heads, n_q, n_k, d, bias_kind, layout, out_layout):
    q, k, v = _qkv(batch, heads, n_q, n_k, d, dtype, layout)
    bias = None
    if bias_kind is not None:
        bias = torch.randn(heads, n_q, n_k, device=DEVICE).to(torch.float32 if bias_kind == "fp32" else dtype)
    shape = (batch, n_q, d * heads) if out_layout == "bnjh" else (batch, heads, n_q, d)
    out = torch.full(shape, math.nan, dtype=dtype, device=DEVICE)

    o = attention(q, k, v, scale=d**-0.5, bias=bias, out_layout=out_layout, out=out)

    ref = _reference(q, k, v, d**-0.5, bias)
    assert o is out
    assert_close(o, _to_bnjh(ref) if out_layout == "bnjh" else ref, TOL[dtype])


def test_large_logits_and_masking_bias():
    """Online softmax must stay exact for large logits and a bias that masks most keys (finite, very negative)."""
    q, k, v = _qkv(1, 2, 40, 170, 16, torch.bfloat16, "qkv")
    bias = torch.where(torch.rand(2, 40, 170, device=DEVICE) < 0.8, -1e4, 0.0)
    bias[..., 0] = 0.0  # every query keeps at least one key
    o = attention(q * 30, k, v, scale=0.25, bias=bias, out_layout="bhnd")
    assert_close(o, _reference(q * 30, k, v, 0.25, bias), TOL[torch.bfloat16])


def test_allocated_bnjh_output_has_aligned_rows():
    q, k, v = _qkv(2, 3, 17, 17, 6, torch.bfloat16, "qkv")
    o = attention(q, k, v, scale=0.4)
    assert o.shape == (2, 17, 18) and o.stride() == (17 * 32, 32, 1)
    assert_close(o.view(34, 18), _to_bnjh(_reference(q, k, v, 0.4)).reshape(34, 18), TOL[torch.bfloat16])


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21, 8])
def test_slimmed_attention_block_chain(dtype, d_slim):
    """qkv GEMM -> attention -> out-projection on width-prefix weights equals the slimmed block in float64."""
    batch, tokens, heads, d_k, width = 2, 197, 3, 8, 24
    x = torch.randn(batch * tokens, width, device=DEVICE).to(dtype)
    w_qkv = torch.randn(3 * heads * d_k, width, device=DEVICE).to(dtype) / width**0.5  # row j*3H + t*H + h
    b_qkv = torch.randn(3 * heads * d_k, device=DEVICE).to(dtype)
    w_o = torch.randn(width, heads * d_k, device=DEVICE).to(dtype) / d_k**0.5  # column j*H + h
    b_o = torch.randn(width, device=DEVICE).to(dtype)
    scale = d_slim**-0.5

    qkv = sliced_linear(x, w_qkv, b_qkv, n_out=3 * heads * d_slim, k_in=width, qkv_heads=heads, seq_len=tokens)
    o = attention(qkv[0], qkv[1], qkv[2], scale=scale)
    y = sliced_linear(o.view(batch * tokens, -1), w_o, b_o, n_out=width, k_in=heads * d_slim, residual=x)

    w_nat = w_qkv.double().view(d_k, 3, heads, width).permute(1, 2, 0, 3)  # [3, H, d_k, width]
    b_nat = b_qkv.double().view(d_k, 3, heads).permute(1, 2, 0)
    q, k, v = (
        (x.double() @ w_nat[t, :, :d_slim].reshape(-1, width).T + b_nat[t, :, :d_slim].reshape(-1))
        .view(batch, tokens, heads, d_slim)
        .transpose(1, 2)
        for t in range(3)
    )
    attn = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    wo_nat = w_o.double().view(width, d_k, heads).permute(0, 2, 1)[:, :, :d_slim].reshape(width, -1)
    ref = x.double() + attn.transpose(1, 2).reshape(batch * tokens, -1) @ wo_nat.T + b_o.double()
    assert_close(y, ref, TOL[dtype])
