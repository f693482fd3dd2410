"""The baseline every slimmed forward is judged against: a materialised dense copy of the slimmed
weights (contiguous, official layout), run with plain PyTorch the way timm runs a ViT.

This is what a user without slimkern would do: copy the kept rows and columns out of the checkpoint
for each width (one weight copy per width) and run an ordinary dense model.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F

import slimkern
from slimkern.plan import SlimPlan
from slimkern.reference import kept_head_dims


def materialise(model: slimkern.SlimModel, plan: SlimPlan) -> list[dict[str, torch.Tensor]]:
    """Contiguous per-block copies of the slimmed weights in the official (timm) layout."""
    blocks = []
    for block, bp in zip(model.blocks, plan.blocks, strict=True):
        idx = kept_head_dims(bp.num_heads, bp.full_head_dim, bp.head_dim).to(model.device)
        inner = bp.num_heads * bp.full_head_dim
        rows = torch.cat([idx, inner + idx, 2 * inner + idx])
        qkv_bias = block.official("attn.qkv.bias")
        blocks.append({
            "qkv_w": block.official("attn.qkv.weight")[rows].contiguous(),
            "qkv_b": None if qkv_bias is None else qkv_bias[rows].contiguous(),
            "proj_w": block.official("attn.proj.weight")[:, idx].contiguous(),
            "fc1_w": block.mlp.fc1.weight[: bp.mlp_hidden].contiguous(),
            "fc1_b": block.mlp.fc1.bias[: bp.mlp_hidden].contiguous(),
            "fc2_w": block.mlp.fc2.weight[:, : bp.mlp_hidden].contiguous(),
        })
    return blocks


def dense_forward(model: slimkern.SlimModel, dense: list[dict[str, torch.Tensor]], plan: SlimPlan,
                  x: torch.Tensor) -> torch.Tensor:
    """Pooled embedding of ``x`` through the dense copies (timm's Attention/Mlp math)."""
    with torch.no_grad():
        t = model.embed(x)
        for block, bp, w in zip(model.blocks, plan.blocks, dense, strict=True):
            eps, d = block.spec.norm_eps, model.dim
            b, n, _ = t.shape
            h = F.layer_norm(t, (d,), block.norm1.weight, block.norm1.bias, eps)
            q, k, v = F.linear(h, w["qkv_w"], w["qkv_b"]).reshape(b, n, 3, bp.num_heads, bp.head_dim) \
                .permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v, scale=bp.scale).transpose(1, 2).reshape(b, n, -1)
            y = F.linear(o, w["proj_w"], block.attn.proj.bias)
            t = t + (y * block.ls1.gamma if block.ls1 is not None else y)
            h = F.layer_norm(t, (d,), block.norm2.weight, block.norm2.bias, eps)
            y = F.linear(F.gelu(F.linear(h, w["fc1_w"], w["fc1_b"])), w["fc2_w"], block.mlp.fc2.bias)
            t = t + (y * block.ls2.gamma if block.ls2 is not None else y)
        t = F.layer_norm(t, (model.dim,), model.norm.weight, model.norm.bias, model.norm_eps)
        return model.pool(t)


class DenseCopy(torch.nn.Module):
    """:func:`dense_forward` at one plan as a module (what exporters and compilers take)."""

    def __init__(self, model: slimkern.SlimModel, dense: list[dict[str, torch.Tensor]], plan: SlimPlan) -> None:
        super().__init__()
        self.model, self.dense, self.plan = model, dense, plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_forward(self.model, self.dense, self.plan, x)


def onnxruntime_session(model: slimkern.SlimModel, dense: list[dict[str, torch.Tensor]], plan: SlimPlan,
                        example: torch.Tensor, folder: str | Path, threads: int):
    """The dense copy exported to ONNX (``torch.onnx.export``, weights as external data in ``folder``) and loaded in
    onnxruntime's CPU provider with ``threads`` intra-op threads and every graph optimisation; returns
    ``fn(x) -> numpy`` (what a CPU user deploying a fixed-width model would run)."""
    import onnxruntime as ort

    path = Path(folder) / f"dense-{len(plan.blocks)}x{plan.blocks[0].head_dim}x{plan.blocks[0].mlp_hidden}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout
        torch.onnx.export(DenseCopy(model, dense, plan), (example,), str(path), input_names=["x"],
                          output_names=["embedding"], dynamo=True, external_data=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between calls: spinning intra-op threads kept competing for the cores with the providers timed
    # next in the same process (torch after an onnxruntime call ran up to 3x slower on a shared 2-core machine)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x.numpy()})[0]
