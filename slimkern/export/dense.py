"""The dense model of one width: every block rebuilt at exactly its slimmed shapes, for export.

A slimmed block at width ``s`` reads the first ``3*H*d_k'`` rows of qkv, the first ``H*d_k'`` columns of the
out-projection and the first ``d_h'`` FFN units of the stored prefix layout (:mod:`slimkern.layout`). A :class:`Block`
built with ``head_dim = d_k'`` and ``mlp_hidden = d_h'`` stores ITS weights in the same prefix layout, so those
prefixes, copied, are its weights; at width 1.0 it runs with the scale ``1/sqrt(d_k')`` of the slimmed forward.
An export is a new file, so materialising the slice there costs nothing at run time and the graph holds only
plain dense matmuls. ``state_dict()`` of the copy gives the reduced model in the checkpoint's own layout.
"""

from __future__ import annotations

import copy
import dataclasses

from torch import nn

from ..blocks import Block
from ..model import SlimModel
from ..plan import BlockPlan, make_plan


def block_plan(block: Block, width: float, mode: str) -> BlockPlan:
    """The plan of one block at ``width`` (the paper's rule depends only on the block's own dims)."""
    spec = block.spec
    return make_plan(width, mode, ((spec.num_heads, spec.head_dim, spec.mlp_hidden),)).blocks[0]


def _kept_slices(block: Block, plan: BlockPlan) -> dict[str, tuple[slice, ...]]:
    """Parameter name -> the index of its kept part in the prefix layout (rows, or all rows and leading columns)."""
    qkv, attn, units = 3 * plan.attn_width, plan.attn_width, plan.mlp_hidden
    kept = {"attn.qkv.weight": (slice(qkv),), "attn.qkv.bias": (slice(qkv),),
            "attn.proj.weight": (slice(None), slice(attn)),
            "mlp.fc1.weight": (slice(units),), "mlp.fc1.bias": (slice(units),),
            "mlp.fc2.weight": (slice(None), slice(units)),
            "mlp.fc3.weight": (slice(units),), "mlp.fc3.bias": (slice(units),)}
    if block.spec.cross_attn:
        for name in ("q", "k", "v"):
            kept[f"cross_attn.{name}.weight"] = kept[f"cross_attn.{name}.bias"] = (slice(attn),)
        kept["cross_attn.proj.weight"] = (slice(None), slice(attn))
    return kept


def dense_block(block: Block, width: float, mode: str) -> Block:
    """A new :class:`Block` of exactly the slimmed shapes of ``block`` at ``width``, holding copies of the kept weights
    (norms, LayerScale and the biases of full-width outputs are shared with ``block``)."""
    plan = block_plan(block, width, mode)
    dense = Block(dataclasses.replace(block.spec, head_dim=plan.head_dim, mlp_hidden=plan.mlp_hidden))
    kept = _kept_slices(block, plan)
    for name, param in block.named_parameters():
        value = param.detach()
        if name in kept:
            value = value[kept[name]].clone()  # a compact copy: a view would keep (and save) the full storage
        owner, _, leaf = name.rpartition(".")
        setattr(dense.get_submodule(owner), leaf, nn.Parameter(value, requires_grad=False))
    return dense


def dense_copy(model: SlimModel, width: float, mode: str = "attn+ffn") -> SlimModel:
    """A copy of ``model`` that computes ``model.run(x, width, mode=mode)`` when run at width 1.0.

    Every :class:`Block` (CROMA's radar and joint stacks included) is replaced by :func:`dense_block`; everything else
    (stem, norms, heads) shares the original tensors through new parameter objects, so converting or editing the copy
    never touches ``model``. Raises if the copy's own plan at 1.0 differs from ``model``'s plan at ``width``.
    """
    shared = {id(t): nn.Parameter(t.detach(), requires_grad=False) for t in model.parameters()}
    shared.update({id(t): t.detach() for t in model.buffers()})
    dense = copy.deepcopy(model, memo=shared)
    originals = {}
    for parent in list(dense.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Block):
                originals[id(child)] = child
                setattr(parent, name, dense_block(child, width, mode))
    dense._block_dims = tuple((b.spec.num_heads, b.spec.head_dim, b.spec.mlp_hidden) for b in dense.blocks)
    for slim, full in zip(dense.plan(1.0).blocks, model.plan(width, mode).blocks, strict=True):
        if (slim.head_dim, slim.mlp_hidden, slim.scale) != (full.head_dim, full.mlp_hidden, full.scale):
            raise RuntimeError(f"{model.cfg.name}: the dense copy's plan {slim} differs from the slimmed plan {full}")
    return dense.eval()

