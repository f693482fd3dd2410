"""CUDA sliced_linear against a float64 PyTorch reference (needs a GPU; the argument checks are tested without one
in test_cuda_backend.py). Mirrors test_triton_sliced_linear.py: NaN-poisoned weights outside the kept prefix and
poisoned outputs, strided inputs, odd sizes, every epilogue, plus the gated FFN with a separate value weight.
"""

from __future__ import annotations

import pytest
import torch

from slimkern.backends.cuda import CudaBackend, sliced_linear
from tests.backends.kernel_checks import assert_close
from tests.backends.op_references import (
    check_gated_ffn,
    check_qkv_layout,
    check_sliced_linear,
    linear_reference,
    poisoned_weight,
    strided_cols,
)

TOL = CudaBackend.op_tolerances  # the backend's own contract for its ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


def _poisoned_weight(n_full: int, k_full: int, n_out: int, k_in: int, dtype) -> torch.Tensor:
    return poisoned_weight(n_full, k_full, n_out, k_in, dtype, DEVICE)


def _strided_x(m: int, k: int, dtype, offset: int = 3) -> torch.Tensor:
    """[m, k] view with a row stride larger than k and a storage offset (offset 0, k % 8 == 0: 16-byte aligned)."""
    return strided_cols(m, k, dtype, DEVICE, offset=offset, tail=8)


# (M, k_in, K_full, n_out, N_full, activation, bias, residual, gamma, x offset): k_in below, at and above one
# BLOCK_K (32) and unaligned; odd n_out; M = 17 (a partial tile), 197 (ViT tokens) and 1000 (128 x 128 tiles);
# offset 0 with k_full % 8 == 0 takes the cp.async path, offset 3 the element-wise one.
CASES = [
    (17, 40, 48, 45, 50, None, False, False, False, 3),
    (197, 64, 72, 45, 48, None, True, False, False, 0),
    (197, 40, 40, 33, 33, "gelu", True, False, False, 3),
    (17, 18, 24, 45, 64, "gelu", False, True, True, 0),
    (197, 18, 32, 24, 24, None, True, True, False, 3),
    (17, 40, 48, 64, 64, None, False, True, True, 0),
    (1000, 200, 256, 300, 304, "gelu", True, False, False, 0),
    (1000, 99, 104, 130, 130, None, True, True, True, 3),
]


@DTYPES
@pytest.mark.parametrize(
    "m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma, offset",
    CASES,
    ids=[f"M{c[0]}-k{c[1]}of{c[2]}-n{c[3]}of{c[4]}-{c[5]}-b{c[6]:d}r{c[7]:d}g{c[8]:d}-o{c[9]}" for c in CASES],
)
def test_matches_reference(dtype, m, k_in, k_full, n_out, n_full, activation, has_bias, has_residual, has_gamma,
                           offset):
    x = _strided_x(m, k_in + 3, dtype, offset)
    check_sliced_linear(sliced_linear, DEVICE, dtype, x, k_in, k_full, n_out, n_full, activation, has_bias,
                        has_residual, has_gamma)


@DTYPES
@pytest.mark.parametrize("m, k_in, n_out, has_bias, offset", [(17, 40, 45, True, 3), (197, 64, 307, False, 0),
                                                             (197, 33, 8, True, 0)])
def test_gated_ffn(dtype, m, k_in, n_out, has_bias, offset):
    check_gated_ffn(sliced_linear, DEVICE, dtype, _strided_x(m, k_in, dtype, offset), k_in, n_out, has_bias, True)


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21, 24])
@pytest.mark.parametrize("has_bias", [False, True], ids=["nobias", "bias"])
def test_qkv_layout(dtype, d_slim, has_bias):
    tokens = 197
    check_qkv_layout(sliced_linear, DEVICE, dtype, _strided_x(2 * tokens, 40, dtype), tokens, d_slim, has_bias)


def test_allocated_outputs_have_aligned_rows_and_weights_are_read_in_place():
    x = torch.randn(17, 40, device=DEVICE).bfloat16()
    w = _poisoned_weight(64, 40, 45, 40, torch.bfloat16)
    y = sliced_linear(x, w, n_out=45, k_in=40)
    assert y.shape == (17, 45) and y.stride() == (48, 1)
    assert_close(y, linear_reference(x, w, None, 45, 40), TOL[torch.bfloat16])
    w[:45] *= 2  # a later edit of the stored prefix shows up: nothing was copied
    assert_close(sliced_linear(x, w, n_out=45, k_in=40), 2 * y.double(), TOL[torch.bfloat16])
