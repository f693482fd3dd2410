"""sliced_linear against a float64 PyTorch reference (interpreter on CPU, the real kernel on a GPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slimkern.backends.triton import sliced_linear
from tests.backends.kernel_checks import DEVICE, DTYPES, TOL, assert_close


def _poisoned_weight(n_full: int, k_full: int, n_out: int, k_in: int, dtype) -> torch.Tensor:
    """A full stored weight whose kept prefix W[:n_out, :k_in] is random and everything else NaN."""
    w = torch.full((n_full, k_full), math.nan, dtype=dtype, device=DEVICE)
    w[:n_out, :k_in] = torch.randn(n_out, k_in, device=DEVICE).to(dtype) / math.sqrt(k_in)
    return w


def _strided_x(m: int, k: int, dtype) -> torch.Tensor:
    """[m, k] view with a row stride larger than k and a non-zero storage offset."""
    return torch.randn(m, k + 7, device=DEVICE).to(dtype)[:, 3 : 3 + k]


def _reference(x, w, bias, n_out, k_in, activation=None, residual=None, gamma=None) -> torch.Tensor:
    y = x[:, :k_in].double() @ w[:n_out, :k_in].double().T
    if bias is not None:
        y = y + bias[:n_out].double()
    if activation == "gelu":
        y = F.gelu(y)
    elif activation == "swiglu":
        y = F.silu(y[:, 0::2]) * y[:, 1::2]
    if residual is not None:
        y = residual.double() + (1.0 if gamma is None else gamma.double()) * y
    return y


# (M, k_in, K_full, n_out, N_full, activation, bias, residual, gamma): k_in below, at and above one BLOCK_K (32 on
# the interpreter) and unaligned; odd n_out; M = 17 (one partial tile) and 197 (ViT tokens).
CASES = [
    (17, 40, 48, 45, 50, None, False, False, False),
    (197, 64, 70, 45, 48, None, True, False, False),
    (197, 40, 40, 33, 33, "gelu", True, False, False),
    (17, 18, 24, 45, 64, "gelu", False, True, True),
    (197, 18, 32, 24, 24, None, True, True, False),
    (17, 40, 48, 64, 64, None, False, True, True),
    (197, 40, 45, 46, 52, "swiglu", True, False, False),
    (17, 33, 33, 2, 8, "swiglu", False, True, True),
]


@DTYPES
@pytest.mark.parametrize(
    "m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma",
    CASES,
    ids=[f"M{c[0]}-k{c[1]}of{c[2]}-n{c[3]}of{c[4]}-{c[5]}-b{c[6]:d}r{c[7]:d}g{c[8]:d}" for c in CASES],
)
def test_matches_reference(dtype, m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma):
    x = _strided_x(m, k_in + 3, dtype)  # wider than k_in: only the first k_in columns count
    w = _poisoned_weight(n_full, k_full, n_out, k_in, dtype)
    bias = torch.cat([torch.randn(n_out), torch.full((n_full - n_out,), math.nan)]).to(dtype).to(DEVICE)
    n_cols = n_out // 2 if activation == "swiglu" else n_out
    residual = torch.randn(m, n_cols + 5, device=DEVICE).to(dtype)[:, :n_cols] if has_residual else None
    gamma = torch.rand(n_cols, device=DEVICE).to(dtype) + 0.5 if has_gamma else None
    out = torch.full((m, n_cols), math.nan, dtype=dtype, device=DEVICE)
    bias = bias if has_bias else None

    y = sliced_linear(x, w, bias, n_out=n_out, k_in=k_in, activation=activation, residual=residual, gamma=gamma,
                      out=out)  # fmt: skip

    assert y is out and y.dtype == dtype
    assert_close(y, _reference(x, w, bias, n_out, k_in, activation, residual, gamma), TOL[dtype])


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21])
@pytest.mark.parametrize("has_bias", [False, True], ids=["nobias", "bias"])
def test_qkv_layout(dtype, d_slim, has_bias):
    """Column j*3H + t*H + h of token b*N + n lands at out[t, b, h, n, j]; the weight is read as a row prefix."""
    batch, tokens, heads, d_k, width = 2, 17, 3, 24, 40
    n_out = 3 * heads * d_slim
    x = _strided_x(batch * tokens, width, dtype)
    w = _poisoned_weight(3 * heads * d_k, width, n_out, width, dtype)
    bias = torch.randn(3 * heads * d_k, device=DEVICE).to(dtype) if has_bias else None
    out = torch.full((3, batch, heads, tokens, d_slim), math.nan, dtype=dtype, device=DEVICE)

    qkv = sliced_linear(x, w, bias, n_out=n_out, k_in=width, qkv_heads=heads, seq_len=tokens, out=out)

    ref = _reference(x, w, bias, n_out, width)  # [B*N, d'*3*H], column j*3H + t*H + h
    ref = ref.reshape(batch, tokens, d_slim, 3, heads).permute(3, 0, 4, 1, 2)
    assert qkv is out
    assert_close(qkv, ref, TOL[dtype])


def test_allocated_outputs_have_aligned_rows():
    x = torch.randn(17, 40, device=DEVICE)
    w = torch.randn(64, 40, device=DEVICE)
    y = sliced_linear(x, w, n_out=45, k_in=40)
    assert y.shape == (17, 45) and y.stride() == (48, 1)
    assert_close(y, _reference(x, w, None, 45, 40), TOL[torch.float32])
    qkv = sliced_linear(x[:16], w, n_out=18, k_in=40, qkv_heads=3, seq_len=8)
    assert qkv.shape == (3, 2, 3, 8, 2) and qkv.is_contiguous()


def test_weight_is_read_in_place_and_not_copied():
    """The kernel must read the prefix of the stored weight itself: a later edit of the stored prefix shows up."""
    x = torch.randn(17, 24, device=DEVICE)
    w = _poisoned_weight(40, 32, 20, 24, torch.float32)
    y0 = sliced_linear(x, w, n_out=20, k_in=24)
    w[:20, :24] *= 2
    y1 = sliced_linear(x, w, n_out=20, k_in=24)
    assert_close(y1, 2 * y0.double(), TOL[torch.float32])


def _base_args(dtype=torch.float32):
    return torch.randn(17, 24, device=DEVICE).to(dtype), torch.randn(40, 32, device=DEVICE).to(dtype)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_out=20, k_in=33), ValueError, "k_in=33"),
        (dict(n_out=41, k_in=24), ValueError, "n_out=41"),
        (dict(n_out=20, k_in=0), ValueError, "k_in=0"),
        (dict(n_out=20, k_in=24, activation="relu"), ValueError, "activation"),
        (dict(n_out=21, k_in=24, activation="swiglu"), ValueError, "even n_out"),
        (dict(n_out=20, k_in=24, gamma=torch.ones(20)), ValueError, "only applied together with residual"),
        (dict(n_out=20, k_in=24, residual=torch.ones(17, 21)), ValueError, "residual must have shape"),
        (dict(n_out=18, k_in=24, qkv_heads=3, seq_len=5), ValueError, "seq_len"),
        (dict(n_out=20, k_in=24, qkv_heads=3, seq_len=17), ValueError, "multiple of 3"),
        (dict(n_out=18, k_in=24, qkv_heads=3, seq_len=17, activation="gelu"), ValueError, "no activation"),
        (dict(n_out=20, k_in=24, out=torch.empty(17, 19)), ValueError, "out must have shape"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    x, w = _base_args()
    kwargs = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(error, match=match):
        sliced_linear(x, w, **kwargs)


def test_bad_tensors_raise():
    x, w = _base_args()
    with pytest.raises(ValueError, match="x has 24 columns, fewer than k_in=30"):
        sliced_linear(x, w, n_out=20, k_in=30)
    with pytest.raises(TypeError, match="weight has dtype torch.bfloat16"):
        sliced_linear(x, w.bfloat16(), n_out=20, k_in=24)
    with pytest.raises(TypeError, match="bias has dtype torch.float16"):
        sliced_linear(x, w, torch.zeros(40, dtype=torch.float16, device=DEVICE), n_out=20, k_in=24)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        sliced_linear(x.double(), w.double(), n_out=20, k_in=24)
    with pytest.raises(ValueError, match="x needs last-dim stride 1"):
        sliced_linear(torch.randn(24, 17, device=DEVICE).T, w, n_out=20, k_in=17)
    with pytest.raises(ValueError, match="weight needs last-dim stride 1"):
        sliced_linear(x, torch.randn(32, 40, device=DEVICE).T, n_out=20, k_in=24)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        sliced_linear(x, w[None], n_out=20, k_in=24)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        sliced_linear(x.tolist(), w, n_out=20, k_in=24)
