"""Weights of a pre-norm ViT block, held once in the width-prefix layout (see :mod:`slimkern.layout`).

A :class:`Block` only holds parameters, under timm's key names (``norm1``, ``attn.qkv``,
``attn.proj``, ``ls1``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2``); backends compute with them.
A block with a cross-attention sublayer (``BlockSpec.cross_attn``, e.g. CROMA's joint encoder) adds
``norm_cross`` and ``cross_attn.{q,k,v,proj}`` between the self-attention and the FFN.
Loading a state dict permutes the attention weights into the prefix layout; ``state_dict()``
permutes them back, so checkpoints go in and come out in the official layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import layout


@dataclass(frozen=True)
class BlockSpec:
    """Shape and options of one transformer block (full width)."""

    dim: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    norm_eps: float = 1e-6
    layer_scale: bool = False
    #: "gelu": ``fc2(gelu(fc1(x)))``; "swiglu": ``fc2(silu(fc1(x)) * fc3(x))`` (4M / TerraMind naming).
    ffn: str = "gelu"
    #: Add a cross-attention sublayer after the self-attention: ``x += proj(attn(q(n(x)), k(n(c)), v(n(c))))``
    #: with ``n = norm_cross`` applied to both the tokens and the context ``c``; separate q, k, v projections
    #: (biases as ``qkv_bias``), out-projection bias as ``proj_bias``, no LayerScale.
    cross_attn: bool = False

    def __post_init__(self) -> None:
        for field in ("dim", "num_heads", "head_dim", "mlp_hidden"):
            if getattr(self, field) < 1:
                raise ValueError(f"BlockSpec.{field} must be >= 1, got {getattr(self, field)}")
        if self.ffn not in ("gelu", "swiglu"):
            raise ValueError(f"BlockSpec.ffn must be 'gelu' or 'swiglu', got {self.ffn!r}")


#: Weights whose width slice is a column prefix ``W[:, :k]`` (the out-projections and fc2).
COLUMN_SLICED = ("attn.proj.weight", "cross_attn.proj.weight", "mlp.fc2.weight")


class _Holder(nn.Module):
    """A named container so that parameters get timm's key names (``attn.qkv.weight``)."""


def linear_params(out_features: int, in_features: int, bias: bool) -> nn.Module:
    """Meta-device ``weight [out, in]`` (and ``bias [out]``) under a linear layer's key names."""
    m = _Holder()
    m.weight = nn.Parameter(torch.empty(out_features, in_features, device="meta"), requires_grad=False)
    m.bias = nn.Parameter(torch.empty(out_features, device="meta"), requires_grad=False) if bias else None
    return m


def norm_params(dim: int) -> nn.Module:
    """Meta-device LayerNorm ``weight`` and ``bias`` ``[dim]``."""
    m = _Holder()
    m.weight = nn.Parameter(torch.empty(dim, device="meta"), requires_grad=False)
    m.bias = nn.Parameter(torch.empty(dim, device="meta"), requires_grad=False)
    return m


def _layer_scale(dim: int) -> nn.Module:
    m = _Holder()
    m.gamma = nn.Parameter(torch.empty(dim, device="meta"), requires_grad=False)
    return m


class Block(nn.Module):
    """Parameter holder of one pre-norm block: ``x += ls1*attn(norm1(x)); x += ls2*mlp(norm2(x))``.

    Built on the meta device; the model materialises it by loading a state dict or by
    :meth:`init_random`.
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        attn_dim = spec.num_heads * spec.head_dim
        self.norm1 = norm_params(spec.dim)
        self.attn = _Holder()
        self.attn.qkv = linear_params(3 * attn_dim, spec.dim, spec.qkv_bias)
        self.attn.proj = linear_params(spec.dim, attn_dim, spec.proj_bias)
        self.norm2 = norm_params(spec.dim)
        self.mlp = _Holder()
        self.mlp.fc1 = linear_params(spec.mlp_hidden, spec.dim, spec.mlp_bias)
        self.mlp.fc2 = linear_params(spec.dim, spec.mlp_hidden, spec.mlp_bias)
        # the gated FFN's value projection: its rows slim like fc1's (first d_h' units), no re-layout
        self.mlp.fc3 = linear_params(spec.mlp_hidden, spec.dim, spec.mlp_bias) if spec.ffn == "swiglu" else None
        if spec.cross_attn:
            self.norm_cross = norm_params(spec.dim)
            self.cross_attn = _Holder()
            for name in ("q", "k", "v"):
                setattr(self.cross_attn, name, linear_params(attn_dim, spec.dim, spec.qkv_bias))
            self.cross_attn.proj = linear_params(spec.dim, attn_dim, spec.proj_bias)
        else:
            self.norm_cross = self.cross_attn = None
        if spec.layer_scale:
            self.ls1 = _layer_scale(spec.dim)
            self.ls2 = _layer_scale(spec.dim)
        else:
            self.ls1 = self.ls2 = None
        self.register_load_state_dict_pre_hook(self._to_prefix_layout)
        self.register_state_dict_post_hook(self._to_official_layout)

    # -- layout conversion at the state-dict boundary -------------------------------------------
    def _permutations(self):
        h, dk = self.spec.num_heads, self.spec.head_dim
        yield "attn.qkv.weight", lambda w: layout.qkv_to_prefix(w, h, dk), lambda w: layout.qkv_to_official(w, h, dk)
        yield "attn.qkv.bias", lambda w: layout.qkv_to_prefix(w, h, dk), lambda w: layout.qkv_to_official(w, h, dk)
        cols = (lambda w: layout.heads_cols_to_prefix(w, h, dk), lambda w: layout.heads_cols_to_official(w, h, dk))
        yield ("attn.proj.weight", *cols)
        if self.spec.cross_attn:
            rows = (lambda w: layout.heads_rows_to_prefix(w, h, dk), lambda w: layout.heads_rows_to_official(w, h, dk))
            for name in ("q", "k", "v"):
                yield (f"cross_attn.{name}.weight", *rows)
                yield (f"cross_attn.{name}.bias", *rows)
            yield ("cross_attn.proj.weight", *cols)

    def _param(self, key: str) -> torch.Tensor | None:
        """The parameter at a dotted ``key``, or None where the layer has none (a bias-free layer)."""
        obj = self
        for part in key.split("."):
            obj = getattr(obj, part, None)
        return obj

    @staticmethod
    def _to_prefix_layout(module: Block, state_dict, prefix, *args) -> None:
        for key, to_prefix, _ in module._permutations():
            w, param = state_dict.get(prefix + key), module._param(key)
            if w is not None and param is not None and w.shape == param.shape:
                state_dict[prefix + key] = to_prefix(w)

    @staticmethod
    def _to_official_layout(module: Block, state_dict, prefix, *args) -> None:
        for key, _, to_official in module._permutations():
            if prefix + key in state_dict:
                state_dict[prefix + key] = to_official(state_dict[prefix + key])
        for key in COLUMN_SLICED:  # saved row-major whatever the backend keeps (safetensors wants contiguous)
            if state_dict.get(prefix + key) is not None:
                state_dict[prefix + key] = state_dict[prefix + key].contiguous()

    # -- memory order of the column-sliced weights ---------------------------------------------
    @torch.no_grad()
    def set_column_major(self, column_major: bool) -> None:
        """Store the column-sliced weights (:data:`COLUMN_SLICED`) column-major or row-major: same shape and values,
        one copy either way; only the strides differ.

        Column-major makes their width slice ``W[:, :k]`` a dense (transposed) block, which the CPU's fused oneDNN
        GEMM reads at full speed (it falls back to a slow reference kernel for a row-major ``W[:, :k]``); the Triton
        and CUDA kernels need row-major. Backends choose when a model resolves them (:meth:`Backend.arrange_weights`).
        """
        for key in COLUMN_SLICED:
            param = self._param(key)
            if param is None or param.device.type == "meta":
                continue
            if column_major and param.stride(0) != 1:
                param.data = param.data.t().contiguous().t()
            elif not column_major and not param.is_contiguous():
                param.data = param.data.contiguous()

    def official(self, key: str) -> torch.Tensor | None:
        """One parameter in the checkpoint's own layout (a copy for the permuted attention weights)."""
        param = self._param(key)
        for name, _, to_official in self._permutations():
            if name == key and param is not None:
                return to_official(param)
        return param

    # -- deterministic random weights ------------------------------------------------------------
    @torch.no_grad()
    def init_random(self, generator: torch.Generator) -> None:
        """Non-trivial random weights (LayerNorm and LayerScale away from 1/0, so tests can fail)."""

        def normal(p: torch.Tensor, mean: float, std: float) -> None:
            p.copy_(torch.randn(p.shape, generator=generator) * std + mean)

        for name, p in self.named_parameters():
            if name.endswith("gamma"):
                normal(p, 0.5, 0.2)
            elif name.startswith("norm"):
                normal(p, 1.0 if name.endswith("weight") else 0.0, 0.1)
            elif name.endswith("bias"):
                normal(p, 0.0, 0.02)
            else:
                normal(p, 0.0, p.shape[1] ** -0.5)
