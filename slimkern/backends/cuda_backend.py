"""The ``cuda`` backend: each block runs as compiled CUDA C++ kernels (``csrc/``) that read the stored weights in place.

Per block: LayerNorm -> qkv GEMM (writes q, k, v as ``[3, B, H, N, d']``) -> fused attention (writes the
out-projection's ``(j, h)`` column layout) -> out-projection GEMM with the residual add (and LayerScale) in its
epilogue -> LayerNorm -> fc1 GEMM with GELU (a gated FFN: one GEMM over fc1 and fc3 with ``silu(gate) * value``
in the epilogue) -> fc2 GEMM with the residual add. The same data flow as the ``triton`` backend, with fewer host
overheads per launch. Cross-attention and an additive attention bias work as there.

bfloat16 and float16 run on the kernels; float32 models run with the torch backend's ops (no fp32 kernels), and
``backend="auto"`` therefore picks this backend for bf16/fp16 only. Availability: a CUDA GPU, the extension
(built ahead of time, or JIT-built with nvcc on first use and cached), and a self-test of every op against PyTorch
on small inputs, once per device; any failure is reported as the reason (``list_backends()``, and the error of an
explicit ``backend="cuda"``), and ``auto`` falls through to ``triton``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..blocks import Block
from ..plan import BlockPlan
from . import Backend, register_backend
from .cross_attention import cross_attention
from .cuda import build
from .cuda.ops import run_attention, run_layer_norm, run_sliced_linear
from .eager import TorchBackend

#: Norm-wise relative error vs an fp32 PyTorch computation that the self-test accepts (bf16 rounding is ~4e-3).
SELF_TEST_TOLERANCE = 2e-2


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def self_test(device: torch.device) -> str | None:
    """Run every op once in bf16 and fp16 on small random inputs against PyTorch: odd sizes, slimmed prefixes, both
    load paths (a 16-byte aligned and an offset view), every epilogue, attention with a bias and ``Nq != Nk``.

    Returns ``None`` when all agree, else a line naming the first failing op, its dtype and its error.
    """
    for dtype in (torch.bfloat16, torch.float16):
        why = _self_test_dtype(device, dtype)
        if why:
            return why
    return None


def _self_test_dtype(device: torch.device, dtype: torch.dtype) -> str | None:
    from . import cuda as ops

    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    x, w, wv, b, r, gamma = rand(37, 48), rand(50, 48), rand(50, 48), rand(50), rand(37, 45), rand(45)
    x_offset = rand(37, 49)[:, 1:]  # not 16-byte aligned: the element-wise load path
    ref = F.linear(x[:, :40].float(), w[:45, :40].float(), b[:45].float())
    ref_offset = F.linear(x_offset[:, :40].float(), w[:45, :40].float(), b[:45].float())
    value = F.linear(x[:, :40].float(), wv[:45, :40].float())
    q, k, v, bias = rand(2, 3, 37, 6), rand(2, 3, 21, 6), rand(2, 3, 21, 6), rand(3, 37, 21)
    att = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 0.4 + bias.float(), -1) @ v.float()
    # the paths a real model takes: several 64 x 64 tiles over 7 K stages with a tail, the 128 x 128 tiles (used
    # once they alone fill every SM: 16 x 9 tiles >= 132 SMs), and key tiles walked with an online softmax
    x_long, w_long = rand(197, 200), rand(300, 208)
    long_ref = F.gelu(F.linear(x_long.float(), w_long[:260, :200].float(), b[:1].float().expand(260)))
    x_big, w_big = rand(2048, 200), rand(1160, 208)
    big_ref = F.linear(x_big.float(), w_big[:1152, :200].float())
    q64, k64, v64 = rand(1, 2, 197, 64), rand(1, 2, 197, 64), rand(1, 2, 197, 64)
    q100, k100, v100 = rand(1, 1, 130, 100), rand(1, 1, 197, 100), rand(1, 1, 197, 100)

    def sdpa(q_, k_, v_, scale):
        return torch.softmax(q_.float() @ k_.float().transpose(-1, -2) * scale, -1) @ v_.float()

    qkv_w = rand(3 * 3 * 8, 48)
    qkv_ref = F.linear(x[:36].float(), qkv_w[:36].float()).view(2, 18, 4, 3, 3).permute(3, 0, 4, 1, 2)
    checks = {
        "sliced_linear (bias, gelu)": lambda: (
            ops.sliced_linear(x_offset, w, b, n_out=45, k_in=40, activation="gelu"), F.gelu(ref_offset)),
        "sliced_linear (residual, LayerScale)": lambda: (
            ops.sliced_linear(x, w, b, n_out=45, k_in=40, residual=r, gamma=gamma), r.float() + gamma.float() * ref),
        "sliced_linear (gated FFN)": lambda: (ops.sliced_linear(x, w, b, n_out=45, k_in=40, value_weight=wv),
                                              F.silu(ref) * value),
        "sliced_linear (qkv scatter)": lambda: (
            ops.sliced_linear(x[:36], qkv_w, n_out=36, k_in=48, qkv_heads=3, seq_len=18), qkv_ref),
        "sliced_linear (64 x 64 tiles, 7 K stages, gelu)": lambda: (
            ops.sliced_linear(x_long, w_long, b[:1].expand(300).contiguous(), n_out=260, k_in=200, activation="gelu"),
            long_ref),
        "sliced_linear (128 x 128 tiles)": lambda: (ops.sliced_linear(x_big, w_big, None, n_out=1152, k_in=200),
                                                    big_ref),
        "attention (d'=6, bias, cross)": lambda: (ops.attention(q, k, v, scale=0.4, bias=bias, out_layout="bhnd"),
                                                  att),
        "attention (d'=64, 197 tokens)": lambda: (ops.attention(q64, k64, v64, scale=0.125, out_layout="bhnd"),
                                                  sdpa(q64, k64, v64, 0.125)),
        "attention (d'=100, 130 x 197, cross)": lambda: (
            ops.attention(q100, k100, v100, scale=0.1, out_layout="bhnd"), sdpa(q100, k100, v100, 0.1)),
        "layer_norm (residual)": lambda: (ops.layer_norm(x, w[0], b[:48], 1e-6, residual=x)[0],
                                          F.layer_norm(2 * x.float(), (48,), w[0].float(), b[:48].float(), 1e-6)),
    }
    for name, check in checks.items():
        label = f"{name}, {str(dtype).removeprefix('torch.')}"
        try:
            with torch.cuda.device(device):  # the kernels launch on the current device's stream
                out, expected = check()
            err = _rel_error(out, expected)
        except Exception as exc:  # a launch or build failure is a verdict too
            return f"self-test of {label} raised {type(exc).__name__}: {exc}"
        if not err < SELF_TEST_TOLERANCE:
            return f"self-test of {label} failed: relative error {err:.2e} >= {SELF_TEST_TOLERANCE:.0e}"
    return None


class CudaBackend(Backend):
    name = "cuda"
    devices = ("cuda",)
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    auto_dtypes = (torch.bfloat16, torch.float16)  # float32 is the torch backend's ops: auto prefers triton there
    tolerances = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}

    def __init__(self) -> None:
        self._verdicts: dict[int, str | None] = {}
        self._fp32 = TorchBackend()

    def _verdict(self, index: int) -> str | None:
        """Self-test verdict for one GPU (cached); builds the extension on the first call (JIT, cached on disk)."""
        if index not in self._verdicts:
            try:
                build.extension()
            except build.ExtensionUnavailable as exc:
                return str(exc)
            self._verdicts[index] = self_test(torch.device("cuda", index))
        return self._verdicts[index]

    def unavailable_reason(self) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA GPU"
        index = torch.cuda.current_device()
        if index in self._verdicts:  # the common case, on every model.run(): no file-system lookups
            return self._verdicts[index]
        return build.unavailable_reason() or self._verdict(index)

    def not_supported_reasons(self, device: torch.device, dtype: torch.dtype) -> list[str]:
        reasons = super().not_supported_reasons(device, dtype)
        if not reasons and device.index is not None and device.index != torch.cuda.current_device():
            why = self._verdict(device.index)
            if why:
                reasons.append(why)
        return reasons

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self._fp32.forward_block(x, block, plan, bias=bias, context=context, context_bias=context_bias)
        # the unchecked runners: these arguments are right by construction, and at batch 1 the Python checks of
        # seven ops per block would cost as much as the kernels (the binding still checks every tensor)
        spec = block.spec
        batch, tokens, dim = x.shape
        rows = x.reshape(batch * tokens, dim)
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        gamma1 = block.ls1.gamma if block.ls1 is not None else None
        gamma2 = block.ls2.gamma if block.ls2 is not None else None
        attn, mlp = block.attn, block.mlp

        h = run_layer_norm(rows, block.norm1.weight, block.norm1.bias, spec.norm_eps)
        qkv = run_sliced_linear(h, attn.qkv.weight, attn.qkv.bias, 3 * plan.attn_width, dim, qkv_heads=plan.num_heads,
                                seq_len=tokens)
        o = run_attention(qkv[0], qkv[1], qkv[2], plan.scale, bias)
        rows = run_sliced_linear(o.view(batch * tokens, plan.attn_width), attn.proj.weight, attn.proj.bias, dim,
                                 plan.attn_width, residual=rows, gamma=gamma1)

        if block.cross_attn is not None:
            rows = cross_attention(rows, context, block, plan, context_bias, batch, layer_norm=run_layer_norm,
                                   sliced_linear=run_sliced_linear, attention=run_attention)

        h = run_layer_norm(rows, block.norm2.weight, block.norm2.bias, spec.norm_eps)
        units, fc1, fc3 = plan.mlp_hidden, mlp.fc1, mlp.fc3
        if fc3 is None:
            hidden = run_sliced_linear(h, fc1.weight, fc1.bias, units, dim, gelu=True)
        else:  # gated FFN: gate (fc1) and value (fc3) GEMMs share one kernel and its X tiles
            hidden = run_sliced_linear(h, fc1.weight, fc1.bias, units, dim, value_weight=fc3.weight,
                                       value_bias=fc3.bias)
        rows = run_sliced_linear(hidden, mlp.fc2.weight, mlp.fc2.bias, dim, units, residual=rows, gamma=gamma2)
        return rows.reshape(batch, tokens, dim)


register_backend(CudaBackend())
