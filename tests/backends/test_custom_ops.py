"""The kernels as PyTorch custom ops (``slimkern::<backend>_<op>``): torch.library.opcheck of every op, fake
implementations on meta tensors, the error on backward, and whole slimmed forwards through the Triton backend under
``torch.compile(fullgraph=True)`` and ``torch.export``.

The Triton ops run in the Triton interpreter on a CPU (tests/conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The CUDA ops' opchecks need a GPU; their fake implementations are checked here on meta tensors.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkern.backends import custom_ops
from slimkern.backends.cuda import ops as cuda_ops
from tests.helpers import tiny_model

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"


def _sliced_linear_cases(device: str, dtype: torch.dtype) -> dict[str, tuple[tuple, dict]]:
    """(args, kwargs) per epilogue: every optional input of the schema is used by at least one case."""
    def rand(*shape):
        return torch.randn(*shape, device=device).to(dtype)

    x = rand(17, 43)[:, :40]  # a padded row stride
    w, wv, b = rand(50, 48), rand(50, 48), rand(50)
    return {
        "plain": ((x, w, None, 45, 40), {}),
        "gelu+bias": ((x, w, b, 45, 33), {"gelu": True}),
        "gated": ((x, w, b, 21, 40), {"value_weight": wv, "value_bias": b}),
        "residual+gamma": ((x, w, b, 45, 40), {"residual": rand(17, 45), "gamma": rand(45)}),
        "qkv": ((x[:16], w, b, 18, 40), {"qkv_heads": 3, "seq_len": 8}),
    }


def _attention_cases(device: str, dtype: torch.dtype) -> dict[str, tuple[tuple, dict]]:
    qkv = torch.randn(3, 2, 3, 17, 6, device=device).to(dtype)  # views of a qkv GEMM output
    k, v = torch.randn(2, 2, 3, 9, 6, device=device).to(dtype)
    return {
        "self": ((qkv[0], qkv[1], qkv[2], 0.4), {}),
        "bias": ((qkv[0], qkv[1], qkv[2], 0.4, torch.randn(3, 17, 17, device=device)), {}),
        "cross": ((qkv[0], k, v, 0.4, torch.randn(3, 17, 9, device=device).to(dtype)), {}),
    }


def _layer_norm_cases(device: str, dtype: torch.dtype) -> dict[str, tuple[tuple, dict]]:
    x = torch.randn(17, 50, device=device).to(dtype)[:, :48]
    w, b = torch.randn(2, 48, device=device).to(dtype)
    return {"affine": ((x, w, b, 1e-6), {}), "bias-free": ((x, w, None, 1e-5), {}), "none": ((x, None, None, 0.5), {})}


CASES = {"sliced_linear": _sliced_linear_cases, "attention": _attention_cases, "layer_norm": _layer_norm_cases}
OP_CASES = [(op, case) for op, make in CASES.items() for case in make("meta", torch.float32)]


def _triton_ops():
    from slimkern.backends.triton import ops

    return ops.OPS


@pytest.mark.parametrize("op, case", OP_CASES, ids=[f"{op}-{case}" for op, case in OP_CASES])
def test_opcheck_triton(op, case):
    """Schema, fake vs real (shapes, dtypes, strides), autograd registration, AOT dispatch: all pass."""
    dtype = torch.float32 if op != "attention" else torch.bfloat16  # one half-precision op on the interpreter too
    args, kwargs = CASES[op](DEVICE, dtype)[case]
    torch.library.opcheck(getattr(_triton_ops(), op), args, kwargs)


@pytest.mark.skipif(not GPU, reason="the CUDA ops run only on a GPU; their fakes are checked on meta tensors below")
@pytest.mark.parametrize("op, case", OP_CASES, ids=[f"{op}-{case}" for op, case in OP_CASES])
def test_opcheck_cuda(op, case):
    args, kwargs = CASES[op]("cuda", torch.bfloat16)[case]
    torch.library.opcheck(getattr(cuda_ops.OPS, op), args, kwargs)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("op, case", OP_CASES, ids=[f"{op}-{case}" for op, case in OP_CASES])
def test_fake_implementations_on_meta_tensors(backend, op, case):
    """On meta tensors the registered op answers with its fake: the shape, dtype and (padded) strides the kernel
    writes, which are the ones the CPU kernels really return (checked by opcheck above)."""
    _triton_ops()
    args, kwargs = CASES[op]("meta", torch.bfloat16)[case]
    out = getattr(torch.ops.slimkern, f"{backend}_{op}")(*args, **kwargs)
    assert out.device.type == "meta" and out.dtype == torch.bfloat16
    if op == "sliced_linear" and "qkv_heads" in kwargs:
        assert out.shape == (3, 2, 3, 8, 2) and out.is_contiguous()
    elif op == "sliced_linear":
        n_out = args[3]
        assert out.shape == (17, n_out) and out.stride() == (-(-n_out // custom_ops.ROW_ALIGN) * 16, 1)
    elif op == "attention":
        assert out.shape == (2, 17, 18) and out.stride() == (17 * 32, 32, 1)  # [B, Nq, d'*H], rows padded to 32
    else:
        assert out.shape == (17, 48) and out.is_contiguous()


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_backward_is_a_clear_error(backend):
    device = DEVICE if backend == "triton" else "meta"  # the cuda op's forward needs a GPU: meta shows the error
    _triton_ops()
    x = torch.randn(5, 8, device=device, requires_grad=True)
    w = torch.randn(6, 8, device=device)
    op = getattr(torch.ops.slimkern, f"{backend}_sliced_linear")
    y = op(x, w, None, 6, 8)
    with pytest.raises(RuntimeError, match=rf"slimkern::{backend}_sliced_linear has no backward; train with "
                                           r"backend='torch'"):
        y.sum().backward()


def test_every_kernel_op_is_registered_and_checked():
    """Three ops per kernel backend, each under slimkern:: with its own name."""
    _triton_ops()
    for backend in ("triton", "cuda"):
        for op in CASES:
            assert hasattr(torch.ops.slimkern, f"{backend}_{op}")


class FixedWidth(nn.Module):
    """A forward at one width with the checks already done, as export and CUDA graphs run it."""

    def __init__(self, model, width: float) -> None:
        super().__init__()
        self.model, self.width = model, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x, self.width, "attn+ffn", "pooled", self.model.backend)


def assert_same_up_to_stem_rounding(traced: torch.Tensor, eager: torch.Tensor) -> None:
    """Eager CPU runs the stem's GEMM through oneDNN's fused op, which is never traced (the traced graph has the
    plain F.linear): same math, another summation order, so float32 rounding apart; the kernels are the same ops."""
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def triton_model():
    # 64 px / patch 16 -> 17 tokens, head dim 32 -> d_k' = 16 at width 0.5
    return tiny_model(backend="triton", depth=2, dim=64, num_heads=2, img_size=64).to(DEVICE)


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # make_plan's interning
def test_torch_compile_traces_the_triton_backend_without_graph_breaks(triton_model):
    """fullgraph=True fails on any graph break: the kernels are opaque ops with fakes, not Python dynamo must enter."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        expected = triton_model.run(x, 0.5)
        compiled = torch.compile(FixedWidth(triton_model, 0.5), fullgraph=True, backend="aot_eager")
        assert_same_up_to_stem_rounding(compiled(x), expected)


def test_torch_export_of_a_fixed_width_forward(triton_model):
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    with torch.no_grad():
        program = torch.export.export(FixedWidth(triton_model, 0.5), (x,))
        ops = {str(node.target) for node in program.graph.nodes if "slimkern" in str(node.target)}
        assert ops == {f"slimkern.triton_{op}.default" for op in CASES}
        assert_same_up_to_stem_rounding(program.module()(x), triton_model.run(x, 0.5))
