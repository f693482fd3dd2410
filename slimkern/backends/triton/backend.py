"""The ``triton`` backend: each block runs as five Triton kernels that read the stored weights in place.

Per block: LayerNorm -> qkv GEMM (writes q, k, v as ``[3, B, H, N, d']``) -> fused attention (writes
the out-projection's ``(j, h)`` column layout) -> out-projection GEMM with the residual add (and
LayerScale) in its epilogue -> LayerNorm -> fc1 GEMM with GELU -> fc2 GEMM with the residual add.
No weight is copied or padded at any width; the kernels get base pointers and full row strides. An
additive attention bias ``[H, Nq, Nk]`` goes to the attention kernel as is. A cross-attention sublayer
(``spec.cross_attn``) adds LayerNorm of tokens and context, three q/k/v GEMMs, attention over the
context and the out-projection GEMM with the residual add.

It runs on CUDA. On a CPU it runs only inside the Triton interpreter (``TRITON_INTERPRET=1`` set
before triton is imported), which is for tests: ``backend="auto"`` never picks it there.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F

from ...blocks import Block
from ...plan import BlockPlan
from ..base import Backend, cross_attention


def _interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonBackend(Backend):
    name = "triton"
    auto_devices = ("cuda",)
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    tolerances = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    op_tolerances = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if _interpreter() else ("cuda",)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not _interpreter():
            return "no CUDA GPU (on a CPU the kernels run only in the Triton interpreter: TRITON_INTERPRET=1)"
        return None

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        from . import attention, layer_norm, sliced_linear  # the kernels (and triton) load on first use

        spec = block.spec
        batch, tokens, dim = x.shape
        rows = x.reshape(batch * tokens, dim).contiguous()  # the kernels read rows with unit stride
        gamma1 = block.ls1.gamma if block.ls1 is not None else None
        gamma2 = block.ls2.gamma if block.ls2 is not None else None

        h = layer_norm(rows, block.norm1.weight, block.norm1.bias, spec.norm_eps)
        qkv = sliced_linear(h, block.attn.qkv.weight, block.attn.qkv.bias, n_out=3 * plan.attn_width, k_in=dim,
                            qkv_heads=plan.num_heads, seq_len=tokens)
        o = attention(qkv[0], qkv[1], qkv[2], scale=plan.scale, bias=bias, out_layout="bnjh")
        rows = sliced_linear(o.reshape(batch * tokens, plan.attn_width), block.attn.proj.weight, block.attn.proj.bias,
                             n_out=dim, k_in=plan.attn_width, residual=rows, gamma=gamma1)

        if block.cross_attn is not None:
            rows = cross_attention(rows, context, block, plan, context_bias, batch, layer_norm=layer_norm,
                                   sliced_linear=sliced_linear, attention=attention)

        h = layer_norm(rows, block.norm2.weight, block.norm2.bias, spec.norm_eps)
        units, fc1, fc3 = plan.mlp_hidden, block.mlp.fc1, block.mlp.fc3
        if fc3 is None:
            hidden = sliced_linear(h, fc1.weight, fc1.bias, n_out=units, k_in=dim, activation="gelu")
        else:  # gated FFN with separate gate (fc1) and value (fc3) weights
            gate = sliced_linear(h, fc1.weight, fc1.bias, n_out=units, k_in=dim)
            hidden = F.silu(gate) * sliced_linear(h, fc3.weight, fc3.bias, n_out=units, k_in=dim)
        rows = sliced_linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias, n_out=dim, k_in=units,
                             residual=rows, gamma=gamma2)
        return rows.reshape(batch, tokens, dim)

