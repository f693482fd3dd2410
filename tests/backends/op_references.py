"""Test bodies shared by the Triton and CUDA op tests: each runs one backend's op on given sizes and compares it
with a float64 PyTorch reference. The test modules keep their own cases, dtypes and skip conditions and pass the op
and the device in. Every op allocates its output inside a :func:`poisoned_outputs` block, so an output element the
kernel does not write stays NaN and fails the comparison."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tests.backends.kernel_checks import assert_close, op_tolerance, poisoned_outputs


# -- layer_norm ---------------------------------------------------------------------------------------------------
def strided_rows(m: int, d: int, dtype: torch.dtype, device: str, mean: float = 0.0) -> torch.Tensor:
    """[m, d] view with a row stride larger than d; values with an offset mean test the variance's numerics."""
    return (torch.randn(m, d + 9, device=device) * 2 + mean).to(dtype)[:, 4 : 4 + d]


def check_layer_norm(layer_norm: Callable, device: str, dtype: torch.dtype, m: int, d: int, affine: str) -> None:
    """A NaN-poisoned output written in full and equal to the float64 reference."""
    x = strided_rows(m, d, dtype, device, mean=3.0)
    weight = torch.randn(d, device=device).to(dtype) if affine != "none" else None
    bias = torch.randn(d, device=device).to(dtype) if affine == "weight+bias" else None

    with poisoned_outputs():
        y = layer_norm(x, weight, bias, 1e-6)

    w64, b64 = (None if t is None else t.double() for t in (weight, bias))
    assert y.dtype == dtype and y.is_contiguous()
    assert_close(y, F.layer_norm(x.double(), (d,), w64, b64, 1e-6), op_tolerance(layer_norm, dtype))


# -- attention ----------------------------------------------------------------------------------------------------
def attention_reference(q, k, v, scale, bias=None) -> torch.Tensor:
    """[B, H, Nq, d'] in float64."""
    s = q.double() @ k.double().transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias.double()
    return torch.softmax(s, dim=-1) @ v.double()


def to_bnjh(o: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d'] -> [B, N, d'*H] with column j*H + h."""
    b, h, n, d = o.shape
    return o.permute(0, 2, 3, 1).reshape(b, n, d * h)


def qkv_views(batch, heads, n_q, n_k, d, dtype, layout, device):
    """q [B, H, Nq, d'], k/v [B, H, Nk, d'] as strided views, never contiguous copies."""
    if layout == "qkv":  # views of the qkv GEMM's [3, B, H, N, d'] output
        n = max(n_q, n_k)
        qkv = torch.randn(3, batch, heads, n, d, device=device).to(dtype)
        return qkv[0, :, :, :n_q], qkv[1, :, :, :n_k], qkv[2, :, :, :n_k]
    # token-major [B, N, H, d'] storage with padding after each head vector, as a separate-projection model has
    q = torch.randn(batch, n_q, heads, d + 3, device=device).to(dtype)[..., :d].transpose(1, 2)
    kv = torch.randn(2, batch, n_k, heads, d + 5, device=device).to(dtype)[..., :d].transpose(2, 3)
    return q, kv[0], kv[1]


def check_attention(attention: Callable, device: str, dtype: torch.dtype, batch: int, heads: int, n_q: int,
                    n_k: int, d: int, bias_kind: str | None, layout: str) -> None:
    """A NaN-poisoned ``[B, Nq, d'*H]`` output written in full and equal to the float64 reference; ``bias_kind``
    None, ``"fp32"`` or ``"same"`` (the dtype of q)."""
    q, k, v = qkv_views(batch, heads, n_q, n_k, d, dtype, layout, device)
    bias = None
    if bias_kind is not None:
        bias = torch.randn(heads, n_q, n_k, device=device).to(torch.float32 if bias_kind == "fp32" else dtype)

    with poisoned_outputs():
        o = attention(q, k, v, scale=d**-0.5, bias=bias)

    assert o.dtype == dtype
    assert_close(o, to_bnjh(attention_reference(q, k, v, d**-0.5, bias)), op_tolerance(attention, dtype))


def check_large_logits_and_masking_bias(attention: Callable, device: str, dtype: torch.dtype, n_k: int) -> None:
    """Online softmax must stay exact for large logits and a bias that masks most keys (finite, very negative)."""
    q, k, v = qkv_views(1, 2, 40, n_k, 16, dtype, "qkv", device)
    bias = torch.where(torch.rand(2, 40, n_k, device=device) < 0.8, -1e4, 0.0)
    bias[..., 0] = 0.0  # every query keeps at least one key
    with poisoned_outputs():
        o = attention(q * 30, k, v, scale=0.25, bias=bias)
    assert_close(o, to_bnjh(attention_reference(q * 30, k, v, 0.25, bias)), op_tolerance(attention, dtype))


def check_allocated_bnjh_output_has_aligned_rows(attention: Callable, device: str, dtype: torch.dtype) -> None:
    q, k, v = qkv_views(2, 3, 17, 17, 6, dtype, "qkv", device)
    with poisoned_outputs():
        o = attention(q, k, v, scale=0.4)
    assert o.shape == (2, 17, 18) and o.stride() == (17 * 32, 32, 1)
    ref = to_bnjh(attention_reference(q, k, v, 0.4)).reshape(34, 18)
    assert_close(o.view(34, 18), ref, op_tolerance(attention, dtype))


def check_attention_block_chain(sliced_linear: Callable, attention: Callable, device: str, dtype: torch.dtype,
                                tokens: int, d_slim: int) -> None:
    """qkv GEMM -> attention -> out-projection on width-prefix weights equals the slimmed block in float64.

    Full head dim 8, kept d' = ``d_slim`` of H = 3 heads, token width 24: the kernels exchange data only through
    the [3, B, H, N, d'] and [B*N, d'*H] layouts, with the weights read as prefixes of the stored tensors.
    """
    batch, heads, d_k, width = 2, 3, 8, 24
    x = torch.randn(batch * tokens, width, device=device).to(dtype)
    w_qkv = torch.randn(3 * heads * d_k, width, device=device).to(dtype) / width**0.5  # row j*3H + t*H + h
    b_qkv = torch.randn(3 * heads * d_k, device=device).to(dtype)
    w_o = torch.randn(width, heads * d_k, device=device).to(dtype) / d_k**0.5  # column j*H + h
    b_o = torch.randn(width, device=device).to(dtype)
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
    assert_close(y, ref, op_tolerance(attention, dtype))


# -- sliced_linear ------------------------------------------------------------------------------------------------
def strided_cols(m: int, k: int, dtype: torch.dtype, device: str, offset: int, tail: int) -> torch.Tensor:
    """[m, k] view with ``offset`` columns before and ``tail`` after it in each row: a row stride larger than k."""
    return torch.randn(m, offset + k + tail, device=device).to(dtype)[:, offset : offset + k]


def poisoned_weight(n_full: int, k_full: int, n_out: int, k_in: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A full stored weight whose kept prefix W[:n_out, :k_in] is random and everything else NaN."""
    w = torch.full((n_full, k_full), math.nan, dtype=dtype, device=device)
    w[:n_out, :k_in] = torch.randn(n_out, k_in, device=device).to(dtype) / math.sqrt(k_in)
    return w


def linear_reference(x, w, bias, n_out, k_in, activation=None, residual=None, gamma=None, wv=None,
                     bv=None) -> torch.Tensor:
    """The float64 sliced linear with its epilogue: gelu, or the gated FFN with the value weight ``wv``."""
    y = x[:, :k_in].double() @ w[:n_out, :k_in].double().T
    if bias is not None:
        y = y + bias[:n_out].double()
    if activation == "gelu":
        y = F.gelu(y)
    if wv is not None:
        value = x[:, :k_in].double() @ wv[:n_out, :k_in].double().T
        y = F.silu(y) * (value if bv is None else value + bv[:n_out].double())
    if residual is not None:
        y = residual.double() + (1.0 if gamma is None else gamma.double()) * y
    return y


def check_sliced_linear(sliced_linear: Callable, device: str, dtype: torch.dtype, x: torch.Tensor, k_in: int,
                        k_full: int, n_out: int, n_full: int, activation: str | None, has_bias: bool,
                        has_residual: bool, has_gamma: bool) -> None:
    """``x`` (wider than k_in: only the first k_in columns count) times the kept prefix of a NaN-poisoned weight,
    with a bias poisoned past n_out, into a NaN-poisoned output: equal to the float64 reference."""
    m = x.shape[0]
    w = poisoned_weight(n_full, k_full, n_out, k_in, dtype, device)
    bias = torch.cat([torch.randn(n_out), torch.full((n_full - n_out,), math.nan)]).to(dtype).to(device)
    residual = torch.randn(m, n_out + 5, device=device).to(dtype)[:, :n_out] if has_residual else None
    gamma = torch.rand(n_out, device=device).to(dtype) + 0.5 if has_gamma else None
    bias = bias if has_bias else None

    with poisoned_outputs():
        y = sliced_linear(x, w, bias, n_out=n_out, k_in=k_in, activation=activation, residual=residual, gamma=gamma)

    assert y.dtype == dtype
    ref = linear_reference(x, w, bias, n_out, k_in, activation, residual, gamma)
    assert_close(y, ref, op_tolerance(sliced_linear, dtype))


def check_gated_ffn(sliced_linear: Callable, device: str, dtype: torch.dtype, x: torch.Tensor, k_in: int, n_out: int,
                    has_bias: bool, has_residual: bool) -> None:
    """silu(X W^T + b) * (X V^T + bv) with W (fc1) and V (fc3) both read as prefixes of poisoned full weights."""
    m = x.shape[0]
    w = poisoned_weight(n_out + 9, k_in + 8, n_out, k_in, dtype, device)
    wv = poisoned_weight(n_out + 9, k_in + 8, n_out, k_in, dtype, device)
    bias = torch.randn(n_out + 9, device=device).to(dtype) if has_bias else None
    bv = torch.randn(n_out + 9, device=device).to(dtype) if has_bias else None
    residual = torch.randn(m, n_out, device=device).to(dtype) if has_residual else None

    with poisoned_outputs():
        y = sliced_linear(x, w, bias, n_out=n_out, k_in=k_in, value_weight=wv, value_bias=bv, residual=residual)

    ref = linear_reference(x, w, bias, n_out, k_in, None, residual, None, wv, bv)
    assert_close(y, ref, op_tolerance(sliced_linear, dtype))


def check_qkv_layout(sliced_linear: Callable, device: str, dtype: torch.dtype, x: torch.Tensor, tokens: int,
                     d_slim: int, has_bias: bool) -> None:
    """Column j*3H + t*H + h of token b*N + n lands at out[t, b, h, n, j]; the weight is read as a row prefix.

    ``x``: ``[2 * tokens, 40]`` (batch 2, width 40).
    """
    batch, heads, d_k, width = 2, 3, 24, 40
    n_out = 3 * heads * d_slim
    w = poisoned_weight(3 * heads * d_k, width, n_out, width, dtype, device)
    bias = torch.randn(3 * heads * d_k, device=device).to(dtype) if has_bias else None

    with poisoned_outputs():
        qkv = sliced_linear(x, w, bias, n_out=n_out, k_in=width, qkv_heads=heads, seq_len=tokens)

    ref = linear_reference(x, w, bias, n_out, width)  # [B*N, d'*3*H], column j*3H + t*H + h
    ref = ref.reshape(batch, tokens, d_slim, 3, heads).permute(3, 0, 4, 1, 2)
    assert qkv.is_contiguous()
    assert_close(qkv, ref, op_tolerance(sliced_linear, dtype))


def bad_sliced_linear_arguments(dtype: torch.dtype) -> list[tuple[dict, type[Exception], str]]:
    """(kwargs, error, message pattern) for ``sliced_linear(x, w, **kwargs)`` with x ``[17, 24]`` and w ``[40, 32]``
    in ``dtype`` on the CPU: the argument errors both backends report alike."""
    return [
        (dict(n_out=20, k_in=33), ValueError, "k_in=33"),
        (dict(n_out=41, k_in=24), ValueError, "n_out=41"),
        (dict(n_out=20, k_in=0), ValueError, "k_in=0"),
        (dict(n_out=20, k_in=24, activation="relu"), ValueError, "activation"),
        (dict(n_out=20, k_in=24, gamma=torch.ones(20, dtype=dtype)), ValueError, "only applied together with residual"),
        (dict(n_out=20, k_in=24, residual=torch.ones(17, 21, dtype=dtype)), ValueError, "residual must have shape"),
        (dict(n_out=18, k_in=24, qkv_heads=3, seq_len=5), ValueError, "seq_len"),
        (dict(n_out=20, k_in=24, qkv_heads=3, seq_len=17), ValueError, "multiple of 3"),
        (dict(n_out=18, k_in=24, qkv_heads=3, seq_len=17, activation="gelu"), ValueError, "no activation"),
        (dict(n_out=20, k_in=24, seq_len=17), ValueError, "only used with qkv_heads"),
        (dict(n_out=20, k_in=24, activation="swiglu"), ValueError, "the gated FFN is value_weight"),
        (dict(n_out=20, k_in=24, bias=torch.ones(19, dtype=dtype)), ValueError, "fewer than n_out=20"),
        (dict(n_out=20, k_in=24, value_bias=torch.ones(40, dtype=dtype)), ValueError,
         "value_bias is only used with value_weight"),
        (dict(n_out=20, k_in=24, value_weight=torch.ones(19, 32, dtype=dtype)), ValueError,
         "value_weight .* is smaller"),
        (dict(n_out=20, k_in=24, value_weight=torch.ones(40, 32, dtype=dtype), activation="gelu"), ValueError,
         "takes no activation"),
        (dict(n_out=18, k_in=24, value_weight=torch.ones(40, 32, dtype=dtype), qkv_heads=3, seq_len=17), ValueError,
         "no qkv output"),
    ]
