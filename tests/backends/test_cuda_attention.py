"""CUDA attention against a float64 PyTorch reference (needs a GPU). Mirrors test_triton_attention.py: d' = 1, 6,
21, 64 (full), 100 and 256, cross attention (Nq != Nk), an additive bias in fp32 or the input dtype, strided
q/k/v views, both output layouts, NaN-poisoned outputs, and the qkv GEMM -> attention -> out-projection chain.
"""

from __future__ import annotations

import pytest
import torch

from slimkern.backends.cuda import attention, sliced_linear
from tests.backends.kernel_checks import TOL, assert_close
from tests.backends.op_references import (
    attention_reference,
    check_attention,
    check_attention_block_chain,
    qkv_views,
    to_bnjh,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
DEVICE = "cuda"


def _qkv(batch, heads, n_q, n_k, d, dtype, layout):
    return qkv_views(batch, heads, n_q, n_k, d, dtype, layout, DEVICE)


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
PARAMS = [(*c, "bnjh") for c in CASES] + [(*c, "bhnd") for c in CASES if c[4] in (1, 21, 256)]


@DTYPES
@pytest.mark.parametrize(
    "batch, heads, n_q, n_k, d, bias_kind, layout, out_layout",
    PARAMS,
    ids=[f"B{p[0]}H{p[1]}-{p[2]}x{p[3]}-d{p[4]}-bias{p[5]}-{p[6]}-{p[7]}" for p in PARAMS],
)
def test_matches_reference(dtype, batch, heads, n_q, n_k, d, bias_kind, layout, out_layout):
    check_attention(attention, DEVICE, dtype, batch, heads, n_q, n_k, d, bias_kind, layout, out_layout)


def test_large_logits_and_masking_bias():
    """Online softmax must stay exact for large logits and a bias that masks most keys (finite, very negative)."""
    q, k, v = _qkv(1, 2, 40, 170, 16, torch.bfloat16, "qkv")
    bias = torch.where(torch.rand(2, 40, 170, device=DEVICE) < 0.8, -1e4, 0.0)
    bias[..., 0] = 0.0  # every query keeps at least one key
    o = attention(q * 30, k, v, scale=0.25, bias=bias, out_layout="bhnd")
    assert_close(o, attention_reference(q * 30, k, v, 0.25, bias), TOL[torch.bfloat16])


def test_allocated_bnjh_output_has_aligned_rows():
    q, k, v = _qkv(2, 3, 17, 17, 6, torch.bfloat16, "qkv")
    o = attention(q, k, v, scale=0.4)
    assert o.shape == (2, 17, 18) and o.stride() == (17 * 32, 32, 1)
    assert_close(o.view(34, 18), to_bnjh(attention_reference(q, k, v, 0.4)).reshape(34, 18), TOL[torch.bfloat16])


@DTYPES
@pytest.mark.parametrize("d_slim", [1, 6, 21, 8])
def test_slimmed_attention_block_chain(dtype, d_slim):
    check_attention_block_chain(sliced_linear, attention, DEVICE, dtype, tokens=197, d_slim=d_slim)
