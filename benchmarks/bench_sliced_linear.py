"""Width-sliced linear layers: slimkern's in-place reads vs a contiguous copy (the dense ideal) and a gather.

Providers: ``dense_copy`` (torch.mm / cuBLAS on a pre-copied contiguous slice), ``gather`` (what plain
PyTorch must do for the paper's attention slice in the official layout: index the rows per call),
``prefix_view`` (the torch backend: F.linear on a prefix view of the width-prefix layout) and, on a
GPU, ``triton`` and ``cuda`` (slimkern's Triton and CUDA C++ kernels reading the prefix in place; ``cuda`` is
skipped with the reason when the extension is not built or not validated).
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.conftest import BATCHES, DEVICE, DTYPE, GPU, SHAPES, TOKENS, WIDTHS, cuda_op, timed
from slimkern.plan import slim_dim
from slimkern.reference import kept_head_dims

PROVIDERS = ("dense_copy", "gather", "prefix_view") + (("triton", "cuda") if GPU else ())
LAYERS = ("qkv", "proj", "fc1", "fc2")


def layer_case(layer: str, dim: int, heads: int, hidden: int, width: float):
    """(full weight [N, K], kept rows n, kept columns k, official-layout gather index or None)."""
    head_dim = dim // heads
    kept = slim_dim(width, head_dim)
    units = slim_dim(width, hidden)
    if layer == "qkv":
        idx = kept_head_dims(heads, head_dim, kept)
        gather = torch.cat([idx, dim + idx, 2 * dim + idx])
        return (3 * dim, dim), 3 * heads * kept, dim, ("rows", gather)
    if layer == "proj":
        return (dim, dim), dim, heads * kept, ("cols", kept_head_dims(heads, head_dim, kept))
    if layer == "fc1":
        return (hidden, dim), units, dim, None
    return (dim, hidden), dim, units, None


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_sliced_linear(benchmark, shape, layer, width, batch, provider):
    dim, heads, hidden = SHAPES[shape]
    (n_full, k_full), n, k, gather = layer_case(layer, dim, heads, hidden, width)
    weight = torch.randn(n_full, k_full, device=DEVICE, dtype=DTYPE)
    bias = torch.randn(n_full, device=DEVICE, dtype=DTYPE)
    x = torch.randn(batch * TOKENS, k, device=DEVICE, dtype=DTYPE)
    flops = 2.0 * batch * TOKENS * n * k

    if provider == "dense_copy":
        w, b = weight[:n, :k].contiguous(), bias[:n].contiguous()

        def fn():
            return torch.addmm(b, x, w.t())
    elif provider == "gather":
        if gather is None:
            pytest.skip("FFN slices are prefixes in the official layout too: nothing to gather")
        axis, idx = gather[0], gather[1].to(DEVICE)

        def fn():
            w = weight[idx] if axis == "rows" else weight[:, idx]
            return F.linear(x, w, bias[:n])
    elif provider == "prefix_view":
        def fn():
            return F.linear(x, weight[:n, :k], bias[:n])
    elif provider == "triton":
        from slimkern.backends.triton import sliced_linear

        def fn():
            return sliced_linear(x, weight, bias, n_out=n, k_in=k)
    else:
        sliced_linear = cuda_op("sliced_linear")

        def fn():
            return sliced_linear(x, weight, bias, n_out=n, k_in=k)

    timed(benchmark, fn, flops, shape=shape, layer=layer, width=width, batch=batch, provider=provider, n=n, k=k)
