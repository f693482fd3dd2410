"""The ``cuda`` backend: availability reasons, selection, the ops' argument checks (all without a GPU), and, on a
GPU, whole slimmed blocks against the float64 reference in every mode and block variant.

Without a GPU nothing is built: the checks of ``slimkern.backends.cuda`` run on CPU and meta tensors and must
raise before the extension is touched.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

from slimkern.backends import cuda as ops
from slimkern.backends import list_backends, select_backend
from slimkern.backends.cuda import backend as cuda_backend
from slimkern.backends.cuda import build
from slimkern.backends.cuda import self_test as cuda_self_test
from slimkern.backends.cuda.backend import CudaBackend
from slimkern.backends.registry import _BACKENDS
from slimkern.blocks import Block, BlockSpec
from slimkern.plan import make_plan
from slimkern.reference import REFERENCE
from tests.backends.op_references import bad_sliced_linear_arguments
from tests.helpers import rel_error

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
no_gpu = pytest.mark.skipif(GPU, reason="checks the GPU-less machine's behaviour")


# -- availability and selection, without a GPU ----------------------------------------------------------------
def test_importing_builds_nothing(tmp_path):
    """Importing the package and the ops builds nothing and does not even import torch's extension builder."""
    code = "import sys, slimkern, slimkern.backends.cuda; print('torch.utils.cpp_extension' in sys.modules)"
    env = {**os.environ, "SLIMKERN_CUDA_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert not (tmp_path / "cache").exists()
    assert result.stdout.strip() == "False"


@no_gpu
def test_unavailable_without_gpu_with_reason():
    assert list_backends()["cuda"] == "no CUDA GPU"
    with pytest.raises(NotImplementedError, match="cuda: no CUDA GPU"):
        select_backend("cuda", torch.device("cuda"), torch.bfloat16)
    with pytest.raises(build.ExtensionUnavailable, match="no CUDA GPU"):
        build.extension()
    assert select_backend("auto", torch.device("cuda"), torch.bfloat16).name != "cuda"


@pytest.fixture
def pretend_gpu(monkeypatch):
    """A GPU-less process that believes it has a GPU (for the reason texts; nothing is launched)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(build, "_build_error", None)
    monkeypatch.setattr(build, "_loaded", None)  # on a GPU machine another test may have loaded the real one
    build.jit_build.cache_clear()
    yield
    build.jit_build.cache_clear()


def test_reasons_for_missing_toolkit_and_sources(pretend_gpu, monkeypatch):
    monkeypatch.setattr(build, "_aot_module", lambda: None)
    monkeypatch.setattr(build, "find_cuda_home", lambda: None)
    assert "no CUDA toolkit (nvcc not found: set CUDA_HOME)" in build.unavailable_reason()
    monkeypatch.setattr(build, "csrc_dir", lambda: None)
    assert "the CUDA sources (csrc/) are not installed" in build.unavailable_reason()


def test_build_failure_reports_the_log(pretend_gpu, monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def fail(**kwargs):
        raise RuntimeError("Error building extension: nvcc said no")

    monkeypatch.setenv("SLIMKERN_CUDA_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_aot_module", lambda: None)
    monkeypatch.setattr(build, "find_cuda_home", lambda: tmp_path)
    monkeypatch.setattr(cpp_extension, "load", fail)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    with pytest.raises(build.ExtensionUnavailable, match=r"failed to build \(log: .*build.log\)") as info:
        build.extension()
    log = str(info.value).split("log: ")[1].rstrip(")")
    assert "nvcc said no" in open(log).read()
    assert build.unavailable_reason() == str(info.value)  # remembered: no second build attempt
    backend = CudaBackend()
    assert "failed to build" in backend.unavailable_reason()


def test_build_command_prints_the_verdict_and_the_compiler_output(monkeypatch, tmp_path, capsys):
    """``python -m slimkern.backends.cuda.build`` (the GPU check's first stage) shows why a build failed."""
    import slimkern.backends

    log = tmp_path / "build.log"
    log.write_text("attention.cu(12): error: identifier undefined")
    monkeypatch.setattr(slimkern.backends, "list_backends",
                        lambda: {"cuda": f"the CUDA extension failed to build (log: {log})"})
    assert build.main() == 1
    assert capsys.readouterr().out.splitlines()[1] == "attention.cu(12): error: identifier undefined"
    monkeypatch.setattr(slimkern.backends, "list_backends", lambda: {"cuda": None})
    assert build.main() == 0


def test_failed_self_test_makes_auto_fall_through(pretend_gpu, monkeypatch):
    monkeypatch.setattr(build, "unavailable_reason", lambda: None)
    monkeypatch.setattr(build, "extension", lambda: None)
    monkeypatch.setattr(cuda_backend, "self_test", lambda device: "self-test of attention failed: relative error 1")
    monkeypatch.setitem(_BACKENDS, "cuda", CudaBackend())
    assert list_backends()["cuda"] == "self-test of attention failed: relative error 1"
    assert select_backend("auto", torch.device("cuda"), torch.bfloat16).name != "cuda"
    with pytest.raises(NotImplementedError, match="cuda: self-test of attention failed"):
        select_backend("cuda", torch.device("cuda"), torch.bfloat16)


def test_auto_picks_cuda_for_half_precision_only(pretend_gpu, monkeypatch):
    monkeypatch.setattr(build, "unavailable_reason", lambda: None)
    monkeypatch.setattr(build, "extension", lambda: None)
    monkeypatch.setattr(cuda_backend, "self_test", lambda device: None)
    monkeypatch.setitem(_BACKENDS, "cuda", CudaBackend())
    cuda = torch.device("cuda")
    assert select_backend("auto", cuda, torch.bfloat16).name == "cuda"
    assert select_backend("auto", cuda, torch.float16).name == "cuda"
    assert select_backend("auto", cuda, torch.float32).name != "cuda"  # fp32 would be the torch ops: prefer triton
    assert select_backend("cuda", cuda, torch.float32).name == "cuda"
    with pytest.raises(NotImplementedError, match="device 'cpu' is not supported"):
        select_backend("cuda", torch.device("cpu"), torch.bfloat16)


# -- the ops' argument checks, on CPU and meta tensors ----------------------------------------------------------
def _linear_args(device="cpu", dtype=torch.bfloat16):
    return torch.randn(17, 24).to(device=device, dtype=dtype), torch.randn(40, 32).to(device=device, dtype=dtype)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        *bad_sliced_linear_arguments(torch.bfloat16),
        (dict(n_out=20, k_in=24, bias=torch.ones(40)), TypeError, "bias has dtype torch.float32"),
    ],
)
def test_sliced_linear_bad_arguments(kwargs, error, match):
    x, w = _linear_args()
    with pytest.raises(error, match=match):
        ops.sliced_linear(x, w, **kwargs)


def test_sliced_linear_type_layout_and_device_errors():
    x, w = _linear_args()
    with pytest.raises(TypeError, match="the CUDA kernels take torch.bfloat16 or torch.float16"):
        ops.sliced_linear(x.float(), w.float(), n_out=20, k_in=24)
    with pytest.raises(TypeError, match="weight has dtype torch.float16"):
        ops.sliced_linear(x, w.half(), n_out=20, k_in=24)
    with pytest.raises(ValueError, match="weight needs last-dim stride 1"):
        ops.sliced_linear(x, w.T.contiguous().T, n_out=20, k_in=24)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        ops.sliced_linear(x, w[None], n_out=20, k_in=24)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ops.sliced_linear(x.tolist(), w, n_out=20, k_in=24)
    with pytest.raises(ValueError, match="weight is on meta, expected cpu"):
        ops.sliced_linear(x, w.to("meta"), n_out=20, k_in=24)
    # every check passed: only the device is wrong, and nothing was built
    for device in ("cpu", "meta"):
        xd, wd = _linear_args(device)
        with pytest.raises(ValueError, match=f"the CUDA kernels need CUDA tensors, got tensors on {device}"):
            ops.sliced_linear(xd, wd, n_out=20, k_in=24, activation="gelu")


def _qkv(n_q=5, n_k=7, d=6, dtype=torch.bfloat16, device="cpu"):
    return (torch.randn(1, 2, n_q, d).to(device=device, dtype=dtype),
            *torch.randn(2, 1, 2, n_k, d).to(device=device, dtype=dtype))


def test_attention_bad_arguments():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"head dim d'=257 outside the supported range \[1, 256\]"):
        big = torch.randn(3, 1, 1, 4, 257, dtype=torch.bfloat16)
        ops.attention(big[0], big[1], big[2], scale=1.0)
    with pytest.raises(TypeError, match="k has dtype torch.float16"):
        ops.attention(q, k.half(), v, scale=1.0)
    with pytest.raises(TypeError, match="take torch.bfloat16 or torch.float16"):
        ops.attention(q.float(), k.float(), v.float(), scale=1.0)
    with pytest.raises(ValueError, match="v needs last-dim stride 1"):
        ops.attention(q, k, torch.randn(1, 2, 6, 7, dtype=torch.bfloat16).transpose(-1, -2), scale=1.0)
    with pytest.raises(ValueError, match="expected k, v of shape"):
        ops.attention(q, k, v[:, :, :6], scale=1.0)
    with pytest.raises(ValueError, match="q must be 4-D"):
        ops.attention(q[0], k, v, scale=1.0)
    with pytest.raises(ValueError, match=r"bias must be \[H, Nq, Nk\]"):
        ops.attention(q, k, v, scale=1.0, bias=torch.zeros(2, 5, 6))
    with pytest.raises(TypeError, match="bias has dtype torch.float16"):
        ops.attention(q, k, v, scale=1.0, bias=torch.zeros(2, 5, 7, dtype=torch.float16))
    with pytest.raises(TypeError, match="scale must be a finite real number"):
        ops.attention(q, k, v, scale=math.inf)
    with pytest.raises(ValueError, match="need CUDA tensors, got tensors on meta"):
        ops.attention(*_qkv(device="meta"), scale=1.0, bias=torch.zeros(2, 5, 7, device="meta"))


def test_layer_norm_bad_arguments():
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    w = torch.ones(32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="d=8193 features exceeds the largest supported row, 8192"):
        ops.layer_norm(torch.randn(2, 8193, dtype=torch.bfloat16), None, None, 1e-6)
    with pytest.raises(TypeError, match="weight has dtype torch.float16"):
        ops.layer_norm(x, w.half(), None, 1e-6)
    with pytest.raises(ValueError, match=r"bias must have shape \(32,\)"):
        ops.layer_norm(x, w, torch.ones(31, dtype=torch.bfloat16), 1e-6)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        ops.layer_norm(x, w, None, -1.0)
    with pytest.raises(TypeError, match="eps must be a real number"):
        ops.layer_norm(x, w, None, "1e-6")
    with pytest.raises(ValueError, match="need CUDA tensors, got tensors on cpu"):
        ops.layer_norm(x, w, None, 1e-6)


# -- the backend's wiring on CPU: the binding's contract modelled in PyTorch -----------------------------------------
TOLERANCE = CudaBackend.tolerances
SPEC = BlockSpec(dim=128, num_heads=2, head_dim=64, mlp_hidden=512)
VARIANTS = {
    "plain": {},
    "layer_scale": {"layer_scale": True},
    "swiglu_bias_free": {"ffn": "swiglu", "qkv_bias": False, "proj_bias": False, "mlp_bias": False},
    "cross_attn": {"cross_attn": True},
}


def _blocks(spec: BlockSpec, depth: int = 2) -> list[Block]:
    generator = torch.Generator().manual_seed(1)
    blocks = []
    for _ in range(depth):
        block = Block(spec)
        block.to_empty(device="cpu")
        block.init_random(generator)
        blocks.append(block)
    return blocks


class ContractModel:
    """What each binding function promises (csrc/binding.cpp + launch.h), written with PyTorch ops: lets the
    backend's data flow (argument order, views, layouts) run on CPU in float64, where only exact agreement passes."""

    @staticmethod
    def sliced_linear(x, w, bias, w_value, bias_value, residual, gamma, out, n_out, k_in, gelu, qkv_heads, seq_len):
        y = x[:, :k_in] @ w[:n_out, :k_in].T + (0 if bias is None else bias[:n_out])
        if gelu:
            y = torch.nn.functional.gelu(y)
        if w_value is not None:
            value = x[:, :k_in] @ w_value[:n_out, :k_in].T + (0 if bias_value is None else bias_value[:n_out])
            y = torch.nn.functional.silu(y) * value
        if residual is not None:
            y = residual + (1 if gamma is None else gamma) * y
        if qkv_heads:
            y = y.view(-1, seq_len, n_out // (3 * qkv_heads), 3, qkv_heads).permute(3, 0, 4, 1, 2)
        out.copy_(y)

    @staticmethod
    def attention(q, k, v, bias, out, scale, bnjh):
        o = torch.softmax(q @ k.transpose(-1, -2) * scale + (0 if bias is None else bias), dim=-1) @ v
        out.copy_(o.permute(0, 2, 3, 1).reshape(out.shape) if bnjh else o)

    @staticmethod
    def layer_norm(x, weight, bias, residual, out, residual_out, eps):
        s = x if residual is None else x + residual
        if residual_out is not None:
            residual_out.copy_(s)
        out.copy_(torch.nn.functional.layer_norm(s, (x.shape[1],), weight, bias, eps))


WIRING = [(w, "attn+ffn", v) for w in (1.0, 0.1) for v in VARIANTS] + [(0.01, m, "plain") for m in ("attn", "ffn")]


@pytest.mark.parametrize("width, mode, variant", WIRING, ids=[f"{w:g}-{m}-{v}" for w, m, v in WIRING])
def test_backend_wiring_against_the_binding_contract(monkeypatch, width, mode, variant):
    monkeypatch.setattr(build, "extension", lambda: ContractModel)
    spec = dataclasses.replace(SPEC, **VARIANTS[variant])
    blocks = [b.to(torch.float64) for b in _blocks(spec)]
    plan = make_plan(width, mode, ((spec.num_heads, spec.head_dim, spec.mlp_hidden),) * len(blocks))
    x = torch.randn(2, 17, spec.dim, dtype=torch.float64)
    bias = torch.randn(spec.num_heads, 17, 17, dtype=torch.float64)
    context = context_bias = None
    if spec.cross_attn:
        context = torch.randn(2, 9, spec.dim, dtype=torch.float64)
        context_bias = torch.randn(spec.num_heads, 17, 9, dtype=torch.float64)
    inputs = {"bias": bias, "context": context, "context_bias": context_bias}

    out = CudaBackend().forward_blocks(x, blocks, plan, **inputs)

    assert rel_error(out, REFERENCE.forward_blocks(x, blocks, plan, **inputs)) < 1e-12


def test_self_test_expectations_match_the_binding_contract(monkeypatch):
    """The self-test's own references agree with the binding's contract (else it would disable a correct build),
    and a wrong kernel result is caught and named."""
    import contextlib

    from slimkern.backends.cuda import ops as cuda_ops

    monkeypatch.setattr(build, "extension", lambda: ContractModel)
    monkeypatch.setattr(cuda_ops.CHECKED, "device_type", None)  # the contract model runs on the CPU
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert cuda_self_test.self_test(torch.device("cpu")) is None

    class WrongAttention(ContractModel):
        @staticmethod
        def attention(q, k, v, bias, out, scale, bnjh):
            ContractModel.attention(q, k, v, None, out, scale, bnjh)  # drops the bias

    monkeypatch.setattr(build, "extension", lambda: WrongAttention)
    assert cuda_self_test.self_test(torch.device("cpu")).startswith(
        "self-test of attention (d'=6, bias, cross), bfloat16 failed: relative error")


# -- on a GPU: whole blocks against the float64 reference -------------------------------------------------------
@needs_gpu
def test_available_and_validated_on_gpu():
    assert list_backends()["cuda"] is None, list_backends()["cuda"]
    assert select_backend("auto", torch.device("cuda"), torch.bfloat16).name == "cuda"


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.333, 0.1, 0.01])
def test_blocks_match_reference(width, mode, variant, dtype):
    """197 tokens (and 50 context tokens), head dim 64 -> d_k' = 64, 32, 21, 6, 1; d_h' = 512 ... 5."""
    spec = dataclasses.replace(SPEC, **VARIANTS[variant])
    blocks = [b.to("cuda", dtype) for b in _blocks(spec)]
    plan = make_plan(width, mode, ((spec.num_heads, spec.head_dim, spec.mlp_hidden),) * len(blocks))
    x = torch.randn(2, 197, spec.dim, device="cuda").to(dtype)
    bias = torch.randn(spec.num_heads, 197, 197, device="cuda").to(dtype) if variant in ("plain", "cross_attn") \
        else None
    context, context_bias = None, None
    if spec.cross_attn:
        context = torch.randn(2, 50, spec.dim, device="cuda").to(dtype)
        context_bias = torch.randn(spec.num_heads, 197, 50, device="cuda").to(dtype)
    backend = select_backend("cuda", x.device, dtype)

    out = backend.forward_blocks(x, blocks, plan, bias=bias, context=context, context_bias=context_bias)

    blocks64 = [b.to("cuda", torch.float64) for b in _blocks(spec)]
    for b64, b in zip(blocks64, blocks, strict=True):  # the reference sees the same rounded weights
        b64.load_state_dict({k: v.double() for k, v in b.state_dict().items()})
    ref = REFERENCE.forward_blocks(x.double(), blocks64, plan,
                                   **{k: None if t is None else t.double() for k, t in
                                      (("bias", bias), ("context", context), ("context_bias", context_bias))})
    assert torch.isfinite(out).all()
    assert rel_error(out, ref) < TOLERANCE[dtype]


@needs_gpu
def test_float32_runs_the_torch_ops():
    blocks = [b.to("cuda") for b in _blocks(SPEC, depth=1)]
    plan = make_plan(0.1, "attn+ffn", ((2, 64, 512),))
    x = torch.randn(1, 17, SPEC.dim, device="cuda")
    out = select_backend("cuda", x.device, torch.float32).forward_blocks(x, blocks, plan)
    ref = select_backend("torch", x.device, torch.float32).forward_blocks(x, blocks, plan)
    assert torch.equal(out, ref)
