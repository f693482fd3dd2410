"""CUDA layer_norm against a float64 PyTorch reference (needs a GPU). Mirrors test_triton_layer_norm.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slimkern.backends.cuda import layer_norm
from tests.backends.kernel_checks import TOL, assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


def _strided(m: int, d: int, dtype, mean: float = 0.0) -> torch.Tensor:
    """[m, d] view with a row stride larger than d; an offset mean tests the variance's numerics."""
    return (torch.randn(m, d + 9, device=DEVICE) * 2 + mean).to(dtype)[:, 4 : 4 + d]


@DTYPES
@pytest.mark.parametrize("m, d", [(17, 48), (197, 77), (17, 768), (3, 1536), (2, 8192)])
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
@pytest.mark.parametrize("has_residual", [False, True], ids=["plain", "residual"])
def test_matches_reference(dtype, m, d, affine, has_residual):
    x = _strided(m, d, dtype, mean=3.0)
    weight = torch.randn(d, device=DEVICE).to(dtype) if affine != "none" else None
    bias = torch.randn(d, device=DEVICE).to(dtype) if affine == "weight+bias" else None
    residual = _strided(m, d, dtype) if has_residual else None
    out = torch.full((m, d), math.nan, dtype=dtype, device=DEVICE)
    residual_out = torch.full((m, d), math.nan, dtype=dtype, device=DEVICE) if has_residual else None

    result = layer_norm(x, weight, bias, 1e-6, residual=residual, out=out, residual_out=residual_out)

    s = x.double() if residual is None else x.double() + residual.double()
    w64, b64 = (None if t is None else t.double() for t in (weight, bias))
    ref = F.layer_norm(s, (d,), w64, b64, 1e-6)
    if has_residual:
        y, s_out = result
        assert s_out is residual_out and s_out.dtype == dtype
        assert_close(s_out, s, TOL[dtype])
    else:
        y = result
    assert y is out and y.dtype == dtype
    assert_close(y, ref, TOL[dtype])


def test_constant_rows_give_the_bias():
    """A constant row has zero variance: the result is the bias, not NaN."""
    x = torch.randn(4, 96, device=DEVICE).bfloat16()
    x[1] = 5.0
    w, b = torch.randn(96, device=DEVICE).bfloat16(), torch.randn(96, device=DEVICE).bfloat16()
    y, s = layer_norm(x, w, b, 0.5, residual=torch.zeros_like(x))
    assert_close(y, F.layer_norm(x.double(), (96,), w.double(), b.double(), 0.5), TOL[torch.bfloat16])
    assert torch.equal(s, x)
