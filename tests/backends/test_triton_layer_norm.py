"""layer_norm against a float64 PyTorch reference (interpreter on CPU, the real kernel on a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimkern.backends.triton import TritonBackend, layer_norm
from tests.backends.kernel_checks import DEVICE, DTYPES, assert_close
from tests.backends.op_references import check_layer_norm, strided_rows

TOL = TritonBackend.op_tolerances  # the backend's own contract for its ops


def _strided(m: int, d: int, dtype, mean: float = 0.0) -> torch.Tensor:
    return strided_rows(m, d, dtype, DEVICE, mean)


@DTYPES
@pytest.mark.parametrize("m, d", [(17, 48), (197, 77), (17, 768)])
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_matches_reference(dtype, m, d, affine):
    check_layer_norm(layer_norm, DEVICE, dtype, m, d, affine)


def test_bias_only():
    x = _strided(17, 40, torch.float32)
    bias = torch.randn(40, device=DEVICE)
    y = layer_norm(x, None, bias, 1e-5)
    assert y.is_contiguous()
    assert_close(y, F.layer_norm(x.double(), (40,), None, bias.double(), 1e-5), TOL[torch.float32])


def test_large_eps_and_constant_rows():
    """A constant row has zero variance: the result is the bias, not NaN."""
    x = torch.randn(4, 96, device=DEVICE)
    x[1] = 5.0
    w, b = torch.randn(96, device=DEVICE), torch.randn(96, device=DEVICE)
    y = layer_norm(x, w, b, 0.5)
    assert_close(y, F.layer_norm(x.double(), (96,), w.double(), b.double(), 0.5), TOL[torch.float32])


def test_bad_arguments_raise():
    x = torch.randn(5, 32, device=DEVICE)
    w = torch.ones(32, device=DEVICE)
    with pytest.raises(ValueError, match="d=8193 features exceeds the largest supported row, 8192"):
        layer_norm(torch.randn(2, 8193, device=DEVICE), None, None, 1e-6)
    with pytest.raises(TypeError, match="weight has dtype torch.bfloat16"):
        layer_norm(x, w.bfloat16(), None, 1e-6)
    with pytest.raises(TypeError, match="x has dtype torch.float64"):
        layer_norm(x.double(), None, None, 1e-6)
    with pytest.raises(ValueError, match=r"bias must have shape \(32,\)"):
        layer_norm(x, w, torch.ones(31, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="x needs last-dim stride 1"):
        layer_norm(torch.randn(32, 5, device=DEVICE).T, None, None, 1e-6)
    with pytest.raises(ValueError, match="x must be 2-D"):
        layer_norm(x[None], None, None, 1e-6)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        layer_norm(x, w, None, -1.0)
    with pytest.raises(TypeError, match="eps must be a real number"):
        layer_norm(x, w, None, "1e-6")
