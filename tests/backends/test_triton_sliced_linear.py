"""sliced_linear against a float64 PyTorch reference (interpreter on CPU, the real kernel on a GPU)."""

from __future__ import annotations

import pytest
import torch

from slimkern.backends.triton import TritonBackend, sliced_linear
from tests.backends.kernel_checks import DEVICE, DTYPES, assert_close
from tests.backends.op_references import (
    bad_sliced_linear_arguments,
    check_gated_ffn,
    check_qkv_layout,
    check_sliced_linear,
    linear_reference,
    poisoned_weight,
    strided_cols,
)

TOL = TritonBackend.op_tolerances  # the backend's own contract for its ops


def _poisoned_weight(n_full: int, k_full: int, n_out: int, k_in: int, dtype) -> torch.Tensor:
    return poisoned_weight(n_full, k_full, n_out, k_in, dtype, DEVICE)


def _strided_x(m: int, k: int, dtype) -> torch.Tensor:
    """[m, k] view with a row stride larger than k and a non-zero storage offset."""
    return strided_cols(m, k, dtype, DEVICE, offset=3, tail=4)


# (M, k_in, K_full, n_out, N_full, activation, bias, residual, gamma): k_in below, at and above one BLOCK_K (32 on
# the interpreter) and unaligned; odd n_out; M = 17 (one partial tile) and 197 (ViT tokens).
CASES = [
    (17, 40, 48, 45, 50, None, False, False, False),
    (197, 64, 70, 45, 48, None, True, False, False),
    (197, 40, 40, 33, 33, "gelu", True, False, False),
    (17, 18, 24, 45, 64, "gelu", False, True, True),
    (197, 18, 32, 24, 24, None, True, True, False),
    (17, 40, 48, 64, 64, None, False, True, True),
]


@DTYPES
@pytest.mark.parametrize(
    "m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma",
    CASES,
    ids=[f"M{c[0]}-k{c[1]}of{c[2]}-n{c[3]}of{c[4]}-{c[5]}-b{c[6]:d}r{c[7]:d}g{c[8]:d}" for c in CASES],
)
def test_matches_reference(dtype, m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma):
    x = _strided_x(m, k_in + 3, dtype)
    check_sliced_linear(sliced_linear, DEVICE, dtype, x, k_in, k_full, n_out, n_full, activation, has_bias,
                        has_residual, has_gamma)


@DTYPES
@pytest.mark.parametrize("m, k_in, n_out, has_bias, has_residual", [(17, 40, 45, True, False),
                                                                   (197, 33, 23, False, True), (17, 18, 1, True, True)])
def test_gated_ffn(dtype, m, k_in, n_out, has_bias, has_residual):
    check_gated_ffn(sliced_linear, DEVICE, dtype, _strided_x(m, k_in, dtype), k_in, n_out, has_bias, has_residual)


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21])
@pytest.mark.parametrize("has_bias", [False, True], ids=["nobias", "bias"])
def test_qkv_layout(dtype, d_slim, has_bias):
    tokens = 17
    check_qkv_layout(sliced_linear, DEVICE, dtype, _strided_x(2 * tokens, 40, dtype), tokens, d_slim, has_bias)


def test_allocated_outputs_have_aligned_rows():
    x = torch.randn(17, 40, device=DEVICE)
    w = torch.randn(64, 40, device=DEVICE)
    y = sliced_linear(x, w, n_out=45, k_in=40)
    assert y.shape == (17, 45) and y.stride() == (48, 1)
    assert_close(y, linear_reference(x, w, None, 45, 40), TOL[torch.float32])
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
    bad_sliced_linear_arguments(torch.float32),
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
