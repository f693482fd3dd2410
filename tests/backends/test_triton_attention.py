"""attention against a float64 PyTorch reference (interpreter on CPU, the real kernel on a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from slimkern.backends.triton import attention, sliced_linear
from tests.backends.kernel_checks import DEVICE, DTYPES, TOL, assert_close


def _reference(q, k, v, scale, bias=None) -> torch.Tensor:
    """[B, H, Nq, d'] in float64."""
    s = q.double() @ k.double().transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias.double()
    return torch.softmax(s, dim=-1) @ v.double()


def _to_bnjh(o: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d'] -> [B, N, d'*H] with column j*H + h."""
    b, h, n, d = o.shape
    return o.permute(0, 2, 3, 1).reshape(b, n, d * h)


def _qkv(batch, heads, n_q, n_k, d, dtype, layout):
    """q [B, H, Nq, d'], k/v [B, H, Nk, d'] as strided views, never contiguous copies."""
    if layout == "qkv":  # views of the qkv GEMM's [3, B, H, N, d'] output
        n = max(n_q, n_k)
        qkv = torch.randn(3, batch, heads, n, d, device=DEVICE).to(dtype)
        return qkv[0, :, :, :n_q], qkv[1, :, :, :n_k], qkv[2, :, :, :n_k]
    # token-major [B, N, H, d'] storage with padding after each head vector, as a separate-projection model has
    q = torch.randn(batch, n_q, heads, d + 3, device=DEVICE).to(dtype)[..., :d].transpose(1, 2)
    kv = torch.randn(2, batch, n_k, heads, d + 5, device=DEVICE).to(dtype)[..., :d].transpose(2, 3)
    return q, kv[0], kv[1]


# (B, H, Nq, Nk, d', bias, q/k/v layout): ViT token counts, cross attention (Nq != Nk), d' = 1, 6, 21, 64, 256;
# on the interpreter the blocks are 64 x 64, so 197 tokens take 4 key blocks, the last one partial.
CASES = [
    (2, 3, 17, 17, 1, None, "qkv"),
    (2, 3, 17, 17, 6, "fp32", "qkv"),
    (1, 2, 17, 17, 21, None, "strided"),
    (1, 2, 17, 17, 256, "same", "qkv"),
    (1, 2, 197, 197, 64, None, "qkv"),
    (1, 1, 197, 197, 6, "same", "strided"),
    (2, 2, 5, 33, 21, None, "strided"),
    (2, 2, 5, 70, 64, "fp32", "qkv"),
]
# The output layout only changes the store: "bhnd" runs on the cheap cases.
PARAMS = [(*c, "bnjh") for c in CASES] + [(*c, "bhnd") for c in CASES if c[2] <= 17 and c[4] <= 64]


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
    q, k, v = _qkv(1, 2, 40, 70, 16, torch.float32, "qkv")
    bias = torch.where(torch.rand(2, 40, 70, device=DEVICE) < 0.8, -1e4, 0.0)
    bias[..., 0] = 0.0  # every query keeps at least one key
    o = attention(q * 30, k, v, scale=0.25, bias=bias, out_layout="bhnd")
    assert_close(o, _reference(q * 30, k, v, 0.25, bias), TOL[torch.float32])


def test_allocated_bnjh_output_has_aligned_rows():
    q, k, v = _qkv(2, 3, 17, 17, 6, torch.float32, "qkv")
    o = attention(q, k, v, scale=0.4)
    assert o.shape == (2, 17, 18) and o.stride() == (17 * 32, 32, 1)
    assert_close(o.view(34, 18), _to_bnjh(_reference(q, k, v, 0.4)).reshape(34, 18), TOL[torch.float32])


@DTYPES
def test_slimmed_attention_block_chain(dtype):
    """qkv GEMM -> attention -> out-projection on width-prefix weights equals the slimmed block in float64.

    Full head dim 8, kept d' = 3 of H = 3 heads, token width 24: the kernels exchange data only through the
    [3, B, H, N, d'] and [B*N, d'*H] layouts, with the weights read as prefixes of the stored tensors.
    """
    batch, tokens, heads, d_k, d_slim, width = 2, 17, 3, 8, 3, 24
    x = torch.randn(batch * tokens, width, device=DEVICE).to(dtype)
    w_qkv = torch.randn(3 * heads * d_k, width, device=DEVICE).to(dtype) / width**0.5  # row j*3H + t*H + h
    b_qkv = torch.randn(3 * heads * d_k, device=DEVICE).to(dtype)
    w_o = torch.randn(width, heads * d_k, device=DEVICE).to(dtype) / d_k**0.5  # column j*H + h
    b_o = torch.randn(width, device=DEVICE).to(dtype)
    scale = d_slim**-0.5

    qkv = sliced_linear(x, w_qkv, b_qkv, n_out=3 * heads * d_slim, k_in=width, qkv_heads=heads, seq_len=tokens)
    o = attention(qkv[0], qkv[1], qkv[2], scale=scale)
    y = sliced_linear(o.view(batch * tokens, -1), w_o, b_o, n_out=width, k_in=heads * d_slim, residual=x)

    # float64 reference in the checkpoint's natural (head-major) order: rows t*H*d_k + h*d_k + j.
    w_nat = w_qkv.double().view(d_k, 3, heads, width).permute(1, 2, 0, 3)  # [3, H, d_k, width]
    b_nat = b_qkv.double().view(d_k, 3, heads).permute(1, 2, 0)
    q, k, v = (
        (x.double() @ w_nat[t, :, :d_slim].reshape(-1, width).T + b_nat[t, :, :d_slim].reshape(-1))
        .view(batch, tokens, heads, d_slim)
        .transpose(1, 2)
        for t in range(3)
    )
    attn = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v  # [B, H, N, d']
    wo_nat = w_o.double().view(width, d_k, heads).permute(0, 2, 1)[:, :, :d_slim].reshape(width, -1)  # (h, j)
    ref = x.double() + attn.transpose(1, 2).reshape(batch * tokens, -1) @ wo_nat.T + b_o.double()
    assert_close(y, ref, TOL[dtype])


def test_bad_arguments_raise():
    q, k, v = _qkv(1, 2, 5, 7, 6, torch.float32, "qkv")
    with pytest.raises(ValueError, match=r"head dim d'=257 outside the supported range \[1, 256\]"):
        big = torch.randn(3, 1, 1, 4, 257, device=DEVICE)
        attention(big[0], big[1], big[2], scale=1.0)
    with pytest.raises(TypeError, match="k has dtype torch.bfloat16"):
        attention(q, k.bfloat16(), v, scale=1.0)
    with pytest.raises(TypeError, match="q has dtype torch.float64"):
        attention(q.double(), k.double(), v.double(), scale=1.0)
    with pytest.raises(ValueError, match="v needs last-dim stride 1"):
        attention(q, k, torch.randn(1, 2, 6, 7, device=DEVICE).transpose(-1, -2), scale=1.0)
    with pytest.raises(ValueError, match="expected k, v of shape"):
        attention(q, k, v[:, :, :6], scale=1.0)
    with pytest.raises(ValueError, match="q must be 4-D"):
        attention(q[0], k, v, scale=1.0)
    with pytest.raises(ValueError, match=r"bias must be \[H, Nq, Nk\]"):
        attention(q, k, v, scale=1.0, bias=torch.zeros(2, 5, 6, device=DEVICE))
    with pytest.raises(TypeError, match="bias has dtype torch.float16"):
        attention(q, k, v, scale=1.0, bias=torch.zeros(2, 5, 7, dtype=torch.float16, device=DEVICE))
    with pytest.raises(ValueError, match="out_layout"):
        attention(q, k, v, scale=1.0, out_layout="bnhd")
    with pytest.raises(TypeError, match="scale must be a finite real number"):
        attention(q, k, v, scale=torch.tensor(1.0))
    with pytest.raises(ValueError, match="out must have shape"):
        attention(q, k, v, scale=1.0, out=torch.empty(1, 5, 13, device=DEVICE))
