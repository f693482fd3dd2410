"""attention against a float64 PyTorch reference (interpreter on CPU, the real kernel on a GPU)."""

from __future__ import annotations

import pytest
import torch

from slimkern.backends.triton import attention, sliced_linear
from tests.backends.kernel_checks import DEVICE, DTYPES
from tests.backends.op_references import (
    check_allocated_bnjh_output_has_aligned_rows,
    check_attention,
    check_attention_block_chain,
    check_large_logits_and_masking_bias,
    qkv_views,
)

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


@DTYPES
@pytest.mark.parametrize(
    "batch, heads, n_q, n_k, d, bias_kind, layout",
    CASES,
    ids=[f"B{c[0]}H{c[1]}-{c[2]}x{c[3]}-d{c[4]}-bias{c[5]}-{c[6]}" for c in CASES],
)
def test_matches_reference(dtype, batch, heads, n_q, n_k, d, bias_kind, layout):
    check_attention(attention, DEVICE, dtype, batch, heads, n_q, n_k, d, bias_kind, layout)


def test_large_logits_and_masking_bias():
    check_large_logits_and_masking_bias(attention, DEVICE, torch.float32, n_k=70)


def test_allocated_bnjh_output_has_aligned_rows():
    check_allocated_bnjh_output_has_aligned_rows(attention, DEVICE, torch.float32)

@DTYPES
def test_slimmed_attention_block_chain(dtype):
    check_attention_block_chain(sliced_linear, attention, DEVICE, dtype, tokens=17, d_slim=3)

def test_bad_arguments_raise():
    q, k, v = qkv_views(1, 2, 5, 7, 6, torch.float32, "qkv", DEVICE)
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
    with pytest.raises(TypeError, match="scale must be a finite real number"):
        attention(q, k, v, scale=torch.tensor(1.0))
