"""The ``torch`` backend: plain PyTorch ops on prefix views of the stored weights.

Because the weights are stored in the width-prefix layout (:mod:`slimkern.layout`), every slimmed weight is a
view: qkv, the cross-attention q/k/v and fc1 are row prefixes (contiguous), the out-projections and fc2 are column
prefixes that BLAS reads with the full leading dimension. No weight is copied at any width. Activations are
re-laid out where attention needs it. An additive attention bias goes to ``scaled_dot_product_attention`` as its
float ``attn_mask``.

On the CPU in float32 and bfloat16 (outside autograd and tracing) a block runs as 9 ops instead of 15: the GEMMs are
oneDNN's, with the bias, GELU / SiLU, gate multiply and residual add fused into them (:mod:`.onednn`), and the
out-projection and fc2 weights are kept column-major there (:meth:`TorchBackend.arrange_weights`) so that their
width slices stay dense views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...blocks import Block
from ...plan import BlockPlan
from ..base import Backend
from . import onednn


class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda")
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    tolerances = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}

    def arrange_weights(self, blocks: list[Block], device: torch.device, dtype: torch.dtype) -> None:
        """Column-major out-projection and fc2 weights where the fused oneDNN GEMMs run, row-major elsewhere."""
        column_major = onednn.supported(device, dtype) and onednn.usable(dtype)
        for block in blocks:
            block.set_column_major(column_major)

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        if block.cross_attn is None and onednn.active(x):
            return self._fused_block(x, block, plan, bias)
        spec = block.spec
        x = x + self._attention(F.layer_norm(x, (spec.dim,), block.norm1.weight, block.norm1.bias, spec.norm_eps),
                                block, plan, bias)
        if block.cross_attn is not None:
            norm = block.norm_cross
            x = x + self._cross_attention(F.layer_norm(x, (spec.dim,), norm.weight, norm.bias, spec.norm_eps),
                                          F.layer_norm(context, (spec.dim,), norm.weight, norm.bias, spec.norm_eps),
                                          block, plan, context_bias)
        x = x + self._mlp(F.layer_norm(x, (spec.dim,), block.norm2.weight, block.norm2.bias, spec.norm_eps),
                          block, plan)
        return x

    @staticmethod
    def _attention(h: torch.Tensor, block: Block, plan: BlockPlan, bias: torch.Tensor | None) -> torch.Tensor:
        rows = 3 * plan.attn_width
        qkv_bias = block.attn.qkv.bias
        qkv = F.linear(h, block.attn.qkv.weight[:rows], None if qkv_bias is None else qkv_bias[:rows])
        y = _out_projection(_self_attention(qkv, plan, bias), block.attn.proj, plan)
        return y * block.ls1.gamma if block.ls1 is not None else y

    @staticmethod
    def _fused_block(x: torch.Tensor, block: Block, plan: BlockPlan, bias: torch.Tensor | None) -> torch.Tensor:
        """One self-attention block on the CPU with oneDNN GEMMs whose epilogues hold the bias, activation, gate and
        residual; a column-sliced weight that is not a dense view (row-major after a ``load_state_dict``) goes to
        ``F.linear`` instead."""
        spec = block.spec
        qkv, proj = block.attn.qkv, block.attn.proj
        rows = 3 * plan.attn_width
        h = F.layer_norm(x, (spec.dim,), block.norm1.weight, block.norm1.bias, spec.norm_eps)
        qkv_out = onednn.linear(h, qkv.weight[:rows], None if qkv.bias is None else qkv.bias[:rows])
        o = _self_attention(qkv_out, plan, bias)
        batch, _, tokens, _ = o.shape
        x = _residual(x, o.permute(0, 2, 3, 1).reshape(batch, tokens, plan.attn_width),
                      proj.weight[:, : plan.attn_width], proj.bias, block.ls1)
        units = plan.mlp_hidden
        fc1, fc2, fc3 = block.mlp.fc1, block.mlp.fc2, block.mlp.fc3
        h = F.layer_norm(x, (spec.dim,), block.norm2.weight, block.norm2.bias, spec.norm_eps)
        b1 = None if fc1.bias is None else fc1.bias[:units]
        if fc3 is None:
            hidden = onednn.linear(h, fc1.weight[:units], b1, "gelu")
        else:  # fc3(h) * silu(fc1(h)): the gate in fc1's epilogue, the product in fc3's
            hidden = onednn.linear_mul(h, fc3.weight[:units], None if fc3.bias is None else fc3.bias[:units],
                                       onednn.linear(h, fc1.weight[:units], b1, "silu"))
        return _residual(x, hidden, fc2.weight[:, :units], fc2.bias, block.ls2)

    @staticmethod
    def _cross_attention(h: torch.Tensor, c: torch.Tensor, block: Block, plan: BlockPlan,
                         bias: torch.Tensor | None) -> torch.Tensor:
        heads, kept, rows = plan.num_heads, plan.head_dim, plan.attn_width

        def project(layer, t: torch.Tensor) -> torch.Tensor:  # rows (j, h) -> [B, H, tokens, d_k']
            y = F.linear(t, layer.weight[:rows], None if layer.bias is None else layer.bias[:rows])
            return y.view(*t.shape[:2], kept, heads).permute(0, 3, 1, 2)

        cross = block.cross_attn
        o = F.scaled_dot_product_attention(project(cross.q, h), project(cross.k, c), project(cross.v, c),
                                           attn_mask=bias, scale=plan.scale)
        return _out_projection(o, cross.proj, plan)

    @staticmethod
    def _mlp(h: torch.Tensor, block: Block, plan: BlockPlan) -> torch.Tensor:
        units = plan.mlp_hidden
        fc1, fc2, fc3 = block.mlp.fc1, block.mlp.fc2, block.mlp.fc3

        def rows(layer, x):  # the first d_h' units of fc1 / fc3: a contiguous row prefix
            return F.linear(x, layer.weight[:units], None if layer.bias is None else layer.bias[:units])

        hidden = F.gelu(rows(fc1, h)) if fc3 is None else F.silu(rows(fc1, h)) * rows(fc3, h)
        y = F.linear(hidden, fc2.weight[:, :units], fc2.bias)
        return y * block.ls2.gamma if block.ls2 is not None else y


def _self_attention(qkv: torch.Tensor, plan: BlockPlan, bias: torch.Tensor | None) -> torch.Tensor:
    """Attention ``[B, H, N, d_k']`` from the qkv projection ``[B, N, 3 * H * d_k']``, columns ``(j, t, h)``."""
    batch, tokens, _ = qkv.shape
    heads, kept = plan.num_heads, plan.head_dim
    # -> q, k, v each [B, H, N, d_k']. One activation copy into a contiguous layout: SDPA's fused CPU/GPU kernels
    # want unit-stride head dims (strided inputs cost 2-5x more)
    q, k, v = qkv.view(batch, tokens, kept, 3, heads).permute(3, 0, 4, 1, 2).contiguous().unbind(0)
    if kept == 1 and q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # at d_k' = 1 the CPU flash kernel is ~3x slower in bfloat16 than in float32 (measured on AVX512-BF16);
        # the float32 copies are tiny, and the result is rounded back to bfloat16 as the kernel's would be
        o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                           attn_mask=None if bias is None else bias.float(), scale=plan.scale)
        return o.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=plan.scale)


def _residual(x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer_scale
              ) -> torch.Tensor:
    """``x + gamma * (h W^T + b)`` (``gamma`` of a LayerScale, else 1) with the add in the GEMM's epilogue."""
    if not onednn.dense(weight):
        y = F.linear(h, weight, bias)
    elif layer_scale is None:
        return onednn.linear_add(h, weight, bias, x)
    else:
        y = onednn.linear(h, weight, bias)
    return x + y if layer_scale is None else torch.addcmul(x, y, layer_scale.gamma)


def _out_projection(o: torch.Tensor, proj, plan: BlockPlan) -> torch.Tensor:
    """Attention output ``[B, H, N, d_k']`` through the out-projection, whose stored columns are ``(j, h)``."""
    batch, _, tokens, _ = o.shape
    o = o.permute(0, 2, 3, 1).reshape(batch, tokens, plan.attn_width)
    return F.linear(o, proj.weight[:, : plan.attn_width], proj.bias)

