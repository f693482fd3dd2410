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

from ...blocks import Block
from ...plan import BlockPlan
from ..base import OPS, Backend, cross_attention
from ..torch.backend import TorchBackend
from . import build
from .ops import run_attention, run_layer_norm, run_sliced_linear
from .self_test import self_test


class CudaBackend(Backend):
    name = "cuda"
    devices = ("cuda",)
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    auto_dtypes = (torch.bfloat16, torch.float16)  # float32 is the torch backend's ops: auto prefers triton there
    tolerances = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    op_tolerances = {torch.bfloat16: 1e-2, torch.float16: 1e-2}

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

    def fallbacks(self, dtype: torch.dtype) -> dict[str, str]:
        return dict.fromkeys(OPS, self._fp32.name) if dtype == torch.float32 else {}

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

