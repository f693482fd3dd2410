"""The ``torch`` backend: plain PyTorch ops on prefix views of the stored weights.

Because the weights are stored in the width-prefix layout (:mod:`slimkern.layout`), every slimmed weight is a
view: qkv, the cross-attention q/k/v and fc1 are row prefixes (contiguous), the out-projections and fc2 are column
prefixes that BLAS reads with the full leading dimension. No weight is copied at any width. Activations are
re-laid out where attention needs it. An additive attention bias goes to ``scaled_dot_product_attention`` as its
float ``attn_mask``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...blocks import Block
from ...plan import BlockPlan
from ..base import Backend


class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda")
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    tolerances = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
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
        batch, tokens, _ = h.shape
        heads, kept = plan.num_heads, plan.head_dim
        rows = 3 * plan.attn_width
        qkv_bias = block.attn.qkv.bias
        qkv = F.linear(h, block.attn.qkv.weight[:rows], None if qkv_bias is None else qkv_bias[:rows])
        # columns are (j, t, h): -> q, k, v each [B, H, N, d_k']. One activation copy into a contiguous
        # layout: SDPA's fused CPU/GPU kernels want unit-stride head dims (strided inputs cost 2-5x more)
        q, k, v = qkv.view(batch, tokens, kept, 3, heads).permute(3, 0, 4, 1, 2).contiguous().unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=plan.scale)
        y = _out_projection(o, block.attn.proj, plan)
        return y * block.ls1.gamma if block.ls1 is not None else y

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


def _out_projection(o: torch.Tensor, proj, plan: BlockPlan) -> torch.Tensor:
    """Attention output ``[B, H, N, d_k']`` through the out-projection, whose stored columns are ``(j, h)``."""
    batch, _, tokens, _ = o.shape
    o = o.permute(0, 2, 3, 1).reshape(batch, tokens, plan.attn_width)
    return F.linear(o, proj.weight[:, : plan.attn_width], proj.bias)

