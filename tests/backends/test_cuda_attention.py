"""CUDA attention against a float64 PyTorch reference (needs a GPU). Mirrors test_triton_attention.py: d' = 1, 6,
21, 64 (full), 100 and 256, cross attention (Nq != Nk), an additive bias in fp32 or the input dtype, strided
q/k/v views, NaN-poisoned outputs, and the qkv GEMM -> attention -> out-projection chain.
"""

from __future__ import annotations

import pytest
import torch

from slimkern.backends.cuda import attention, sliced_linear
from tests.backends.op_references import (
    check_allocated_bnjh_output_has_aligned_rows,
    check_attention,
    check_attention_block_chain,
    check_large_logits_and_masking_bias,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


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


@DTYPES
@pytest.mark.parametrize(
    "batch, heads, n_q, n_k, d, bias_kind, layout",
    CASES,
    ids=[f"B{c[0]}H{c[1]}-{c[2]}x{c[3]}-d{c[4]}-bias{c[5]}-{c[6]}" for c in CASES],
)
def test_matches_reference(dtype, batch, heads, n_q, n_k, d, bias_kind, layout):
    check_attention(attention, DEVICE, dtype, batch, heads, n_q, n_k, d, bias_kind, layout)


def test_large_logits_and_masking_bias():
    check_large_logits_and_masking_bias(attention, DEVICE, torch.bfloat16, n_k=170)


def test_allocated_bnjh_output_has_aligned_rows():
    check_allocated_bnjh_output_has_aligned_rows(attention, DEVICE, torch.bfloat16)


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21, 8])
def test_slimmed_attention_block_chain(dtype, d_slim):
    check_attention_block_chain(sliced_linear, attention, DEVICE, dtype, tokens=197, d_slim=d_slim)
