"""Attention at reduced head dims: slimkern's kernel vs SDPA on materialised contiguous q/k/v and the math path.

Providers: ``sdpa_contiguous`` (torch SDPA, default backend, on contiguous copies: the dense ideal),
``math`` (explicit softmax(QK^T)V), ``torch_backend`` (what the torch backend does: one contiguous copy of
q, k, v out of the qkv GEMM's (j, t, h) columns, then SDPA) and,
on a GPU, ``triton`` and ``cuda`` (slimkern's fused Triton and CUDA C++ kernels on the qkv kernel's output
layout; ``cuda`` is skipped with the reason when the extension is not built or not validated).
"""

import pytest
import torch

from benchmarks.conftest import BATCHES, DEVICE, DTYPE, GPU, SHAPES, WIDTHS, cuda_op, timed
from slimkern.plan import slim_dim

PROVIDERS = ("sdpa_contiguous", "math", "torch_backend") + (("triton", "cuda") if GPU else ())
TOKEN_COUNTS = (197, 1025) if GPU else (197,)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("tokens", TOKEN_COUNTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_attention(benchmark, shape, tokens, width, batch, provider):
    dim, heads, _ = SHAPES[shape]
    kept = slim_dim(width, dim // heads)
    scale = kept**-0.5
    flops = 4.0 * batch * heads * tokens * tokens * kept
    if provider == "torch_backend":
        qkv = torch.randn(batch, tokens, kept, 3, heads, device=DEVICE, dtype=DTYPE)
    else:
        # the layout slimkern's qkv kernel writes: [3, B, H, N, d'] (contiguous per q, k, v)
        q, k, v = torch.randn(3, batch, heads, tokens, kept, device=DEVICE, dtype=DTYPE).unbind(0)

    if provider == "sdpa_contiguous":
        def fn():
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    elif provider == "torch_backend":
        def fn():
            q, k, v = qkv.permute(3, 0, 4, 1, 2).contiguous().unbind(0)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    elif provider == "math":
        def fn():
            return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v
    elif provider == "triton":
        from slimkern.backends.triton import attention

        def fn():
            return attention(q, k, v, scale=scale)
    else:
        attention = cuda_op("attention")

        def fn():
            return attention(q, k, v, scale=scale)

    timed(benchmark, fn, flops, shape=shape, tokens=tokens, width=width, batch=batch, provider=provider, d_k=kept)
