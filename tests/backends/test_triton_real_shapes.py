"""The Triton kernels at the shapes the zoo really runs (SatMAE ViT-L/16, Prithvi-EO-2.0 1025 tokens), on CUDA.

Skipped without a GPU: the interpreter is far too slow for these sizes (the tiny-shape tests beside this file
cover the same code paths on a CPU).
"""

import math

import pytest
import torch

from slimkern.backends.triton import TritonBackend

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# the ops' contract, with fp16 held tighter at these real shapes (its 10-bit mantissa keeps them well below it)
TOLERANCE = {**TritonBackend.op_tolerances, torch.float16: 5e-3}
DIM, HEADS, HIDDEN, BATCH = 1024, 16, 4096, 8


def rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.1, 0.01])
@pytest.mark.parametrize("layer", ["qkv", "proj", "fc1", "fc2"])
def test_sliced_linear_vit_large(layer, width, dtype):
    from slimkern.backends.triton import sliced_linear

    kept, units = max(1, int(width * 64)), max(1, int(width * HIDDEN))
    full, n_out, k_in = {"qkv": ((3 * DIM, DIM), 3 * HEADS * kept, DIM), "proj": ((DIM, DIM), DIM, HEADS * kept),
                         "fc1": ((HIDDEN, DIM), units, DIM), "fc2": ((DIM, HIDDEN), DIM, units)}[layer]
    weight = torch.randn(full, device="cuda").to(dtype) / math.sqrt(k_in)
    bias = torch.randn(full[0], device="cuda").to(dtype)
    x = torch.randn(BATCH * 197, k_in, device="cuda").to(dtype)
    out = sliced_linear(x, weight, bias, n_out=n_out, k_in=k_in, activation="gelu" if layer == "fc1" else None)
    ref = x.double() @ weight[:n_out, :k_in].double().T + bias[:n_out].double()
    if layer == "fc1":
        ref = torch.nn.functional.gelu(ref)
    assert rel(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [197, 433, 1025])
@pytest.mark.parametrize("kept", [64, 32, 21, 6, 1])
def test_attention_real_lengths(kept, tokens, dtype):
    from slimkern.backends.triton import attention

    q, k, v = torch.randn(3, 4, HEADS, tokens, kept, device="cuda").to(dtype).unbind(0)
    out = attention(q, k, v, scale=kept**-0.5)  # [B, N, d'*H], column j*H + h
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * kept**-0.5, dim=-1) @ v.double()
    ref = ref.permute(0, 2, 3, 1).flatten(2)
    assert rel(out, ref) < TOLERANCE[dtype]
