"""CUDA layer_norm against a float64 PyTorch reference (needs a GPU). Mirrors test_triton_layer_norm.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimkern.backends.cuda import CudaBackend, layer_norm
from tests.backends.kernel_checks import assert_close
from tests.backends.op_references import check_layer_norm

TOL = CudaBackend.op_tolerances  # the backend's own contract for its ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


@DTYPES
@pytest.mark.parametrize("m, d", [(17, 48), (197, 77), (17, 768), (3, 1536), (2, 8192)])
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_matches_reference(dtype, m, d, affine):
    check_layer_norm(layer_norm, DEVICE, dtype, m, d, affine)


def test_constant_rows_give_the_bias():
    """A constant row has zero variance: the result is the bias, not NaN."""
    x = torch.randn(4, 96, device=DEVICE).bfloat16()
    x[1] = 5.0
    w, b = torch.randn(96, device=DEVICE).bfloat16(), torch.randn(96, device=DEVICE).bfloat16()
    y = layer_norm(x, w, b, 0.5)
    assert_close(y, F.layer_norm(x.double(), (96,), w.double(), b.double(), 0.5), TOL[torch.bfloat16])
