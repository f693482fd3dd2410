"""The whole slimmed forward through the ``triton`` backend against the float64 reference.

On CPU this runs in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the models
are tiny; on a GPU the same tests run on CUDA at the real ViT-L shape as well.
"""

import dataclasses

import pytest
import torch
from torch import nn

import slimkern
from slimkern.backends import select_backend
from slimkern.backends.triton import TritonBackend
from slimkern.blocks import Block
from tests.helpers import rel_error, tiny_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# 64 px / patch 16 -> 17 tokens; head dim 32 -> d_k' = 1, 3, 10, 16, 32 at the widths below
SMALL = {"depth": 2, "dim": 64, "num_heads": 2, "img_size": 64}
TOLERANCE = TritonBackend.tolerances


def triton_model(dtype=torch.float32, **spec_changes):
    model = tiny_model(backend="triton", **SMALL)
    if spec_changes:
        spec = dataclasses.replace(model.blocks[0].spec, **spec_changes)
        model.blocks = nn.ModuleList(Block(spec) for _ in model.blocks)
        model.blocks.to_empty(device="cpu")
        generator = torch.Generator().manual_seed(2)
        for block in model.blocks:
            block.init_random(generator)
    return model.to(DEVICE, dtype)


@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.333, 0.1, 0.01])
def test_forward_matches_reference(width, mode):
    model = triton_model()
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    fast = model.run(x, width, mode=mode, output="tokens")
    assert rel_error(fast, model.reference(x, width, mode=mode, output="tokens")) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    model = triton_model(dtype)
    x = torch.randn(2, 3, 64, 64, device=DEVICE).to(dtype)
    for width in (1.0, 0.1):
        report = model.validate(x, width)
        assert report.backend == "triton" and report.rel_error < TOLERANCE[dtype], report


@pytest.mark.parametrize("variant", [{"layer_scale": True}, {"ffn": "swiglu", "qkv_bias": False, "proj_bias": False,
                                                              "mlp_bias": False}])
def test_block_variants(variant):
    model = triton_model(**variant)
    x = torch.randn(1, 3, 64, 64, device=DEVICE)
    for width in (1.0, 0.25):
        assert rel_error(model.run(x, width), model.reference(x, width)) < 1e-5


def test_auto_never_picks_the_interpreter_on_cpu():
    assert select_backend("auto", torch.device("cpu"), torch.float32).name == "torch"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_satmae_vit_large_on_gpu():
    model = slimkern.load("satmae", device="cuda", backend="triton")
    x = torch.randn(2, 3, 224, 224, device="cuda")
    assert select_backend("auto", torch.device("cuda"), torch.float32).name in ("triton", "cuda")
    for width in (1.0, 0.5, 0.1, 0.01):
        assert model.validate(x, width).rel_error < 1e-5
