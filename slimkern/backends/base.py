"""The interface every backend implements, and what the backends share.

:class:`Backend` runs the transformer blocks of a slimmed encoder; a backend declares the devices and dtypes it
supports as data, its tolerances against the float64 reference, and which block ops it hands to another backend's
implementation (:meth:`Backend.fallbacks`). :class:`KernelBackend` is the data flow of a block on the kernel ops
(``sliced_linear``, ``attention``, ``layer_norm``), written once for the Triton and CUDA backends, which differ only
in their ops. Their ops take the same arguments and layouts, so the argument checks below are shared too: every
message starts with the op's name and names the offending argument with its shape, dtype, stride or device.
"""

from __future__ import annotations

import importlib
import math
from numbers import Real
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import Block
from ..plan import BlockPlan, SlimPlan

#: The ops a block is made of; :meth:`Backend.fallbacks` reports them one by one.
OPS = ("layer_norm", "sliced_linear", "attention")


class Backend:
    """Base class: runs every transformer block of a slimmed encoder.

    Subclasses set the class attributes and implement :meth:`forward_block`.
    """

    name: str = ""
    devices: tuple[str, ...] = ()
    #: Devices on which ``backend="auto"`` may pick this backend (default: all of ``devices``).
    auto_devices: tuple[str, ...] | None = None
    #: Dtypes for which ``backend="auto"`` may pick this backend (default: all of ``dtypes``).
    auto_dtypes: tuple[torch.dtype, ...] | None = None
    dtypes: tuple[torch.dtype, ...] = ()
    #: Norm-wise relative error vs the float64 reference that ``validate`` accepts, per dtype.
    tolerances: dict[torch.dtype, float] = {}
    #: Norm-wise relative error of one op (``sliced_linear``, ``attention``, ``layer_norm``) vs the same op in
    #: float64, per dtype: the contract of a kernel backend's ops, which their tests hold them to.
    op_tolerances: dict[torch.dtype, float] = {}

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run at all in this process (``None`` when it can)."""
        return None

    def __deepcopy__(self, memo: dict) -> Backend:
        return self  # one instance per backend: a copied model (export's dense copy) runs on the same one

    def prepare(self) -> None:
        """Load what the forward needs (kernels, ops). A model calls it when it resolves its backend (at load and
        on every move), so that forwards, and traces of them, find everything loaded."""

    def fallbacks(self, dtype: torch.dtype) -> dict[str, str]:
        """The block ops (of :data:`OPS`) that this backend hands to another backend's implementation for a model
        in ``dtype``: op -> that backend's name. Empty when it runs every op itself."""
        return {}

    def not_supported_reasons(self, device: torch.device, dtype: torch.dtype) -> list[str]:
        """Readable reasons why this backend cannot run a model on ``device`` in ``dtype``."""
        reasons = []
        why = self.unavailable_reason()
        if why:
            reasons.append(why)
        if device.type not in self.devices:
            reasons.append(f"device {device.type!r} is not supported (supported: {', '.join(self.devices)})")
        if dtype not in self.dtypes:
            supported = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(f"dtype {dtype} is not supported (supported: {supported})")
        return reasons

    def forward_blocks(self, x: torch.Tensor, blocks: list[Block], plan: SlimPlan, *, bias: torch.Tensor | None = None,
                       context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``x`` ``[B, N, d]`` through every block at the widths of ``plan``.

        Args:
            bias: additive per-head attention-logit bias ``[H, N, N]`` of every self-attention (e.g. CROMA's 2-D
                ALiBi), in ``x.dtype``, broadcast over the batch. Slimming keeps every head, so it is used as is.
            context: ``[B, M, d]`` tokens the cross-attention sublayers read keys and values from (required when a
                block has ``spec.cross_attn``).
            context_bias: additive bias ``[H, N, M]`` of the cross-attention logits (only with ``context``).
        """
        check_attention_inputs(x, blocks, bias, context, context_bias)
        for block, block_plan in zip(blocks, plan.blocks, strict=True):
            x = self.forward_block(x, block, block_plan, bias=bias, context=context, context_bias=context_bias)
        return x

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def layer_norm(self, x: torch.Tensor, norm: nn.Module, eps: float) -> torch.Tensor:
        """A (final) LayerNorm over the last dim with ``norm.weight`` / ``norm.bias``."""
        return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, eps)


class KernelBackend(Backend):
    """A backend whose blocks run on its kernel ops: the custom ops ``slimkern::<name>_<op>`` of
    :mod:`slimkern.backends.custom_ops`, found in the ``OPS`` of :attr:`ops_module` (imported by :meth:`prepare`).

    Per block: LayerNorm -> qkv GEMM (writes q, k, v as ``[3, B, H, N, d']``) -> attention (writes the
    out-projection's ``(j, h)`` column layout) -> out-projection GEMM with the residual add (and LayerScale) in its
    epilogue -> cross-attention sublayer (blocks with ``spec.cross_attn``) -> LayerNorm -> fc1 GEMM with GELU, or
    one gated GEMM over fc1 and fc3 with ``silu(gate) * value`` in its epilogue -> fc2 GEMM with the residual add.
    No weight is copied or padded at any width: the kernels get base pointers and full row strides; an additive
    attention bias ``[H, Nq, Nk]`` goes to the attention op as is.
    """

    #: The module whose ``OPS`` are this backend's ops (it may import triton or load an extension: only on use).
    ops_module: str = ""

    def __init__(self) -> None:
        self._ops: SimpleNamespace | None = None

    @property
    def ops(self) -> SimpleNamespace:
        """The backend's custom ops (``.sliced_linear``, ``.attention``, ``.layer_norm``)."""
        if self._ops is None:
            self._ops = importlib.import_module(self.ops_module).OPS
        return self._ops

    def prepare(self) -> None:
        self.ops  # noqa: B018  (imports and registers the ops)

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        ops, spec, attn, mlp = self.ops, block.spec, block.attn, block.mlp
        batch, tokens, dim = x.shape
        rows = x.reshape(batch * tokens, dim)
        if rows.stride(-1) != 1:  # the kernels read rows with unit stride (any row stride)
            rows = rows.contiguous()
        gamma1 = block.ls1.gamma if block.ls1 is not None else None
        gamma2 = block.ls2.gamma if block.ls2 is not None else None
        a = plan.attn_width

        h = ops.layer_norm(rows, block.norm1.weight, block.norm1.bias, spec.norm_eps)
        qkv = ops.sliced_linear(h, attn.qkv.weight, attn.qkv.bias, 3 * a, dim, qkv_heads=plan.num_heads,
                                seq_len=tokens)
        o = ops.attention(qkv[0], qkv[1], qkv[2], plan.scale, bias)
        # a view, not a copy: the [B, N, d'*H] output's padded rows still merge into [B*N, d'*H] rows
        rows = ops.sliced_linear(o.view(batch * tokens, a), attn.proj.weight, attn.proj.bias, dim, a, residual=rows,
                                 gamma=gamma1)
        if block.cross_attn is not None:
            rows = self._cross_attention(rows, context, block, plan, context_bias, batch)

        h = ops.layer_norm(rows, block.norm2.weight, block.norm2.bias, spec.norm_eps)
        units, fc1, fc3 = plan.mlp_hidden, mlp.fc1, mlp.fc3
        if fc3 is None:
            hidden = ops.sliced_linear(h, fc1.weight, fc1.bias, units, dim, gelu=True)
        else:  # gated FFN: gate (fc1) and value (fc3) GEMMs in one kernel, sharing its X tiles
            hidden = ops.sliced_linear(h, fc1.weight, fc1.bias, units, dim, value_weight=fc3.weight,
                                       value_bias=fc3.bias)
        rows = ops.sliced_linear(hidden, mlp.fc2.weight, mlp.fc2.bias, dim, units, residual=rows, gamma=gamma2)
        return rows.reshape(batch, tokens, dim)

    def _cross_attention(self, rows: torch.Tensor, context: torch.Tensor, block: Block, plan: BlockPlan,
                         bias: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``rows + proj(attention(q(n(rows)), k(n(context)), v(n(context))))`` with ``n = norm_cross``."""
        ops, cross, norm, a = self.ops, block.cross_attn, block.norm_cross, plan.attn_width
        dim, eps = rows.shape[1], block.spec.norm_eps
        h = ops.layer_norm(rows, norm.weight, norm.bias, eps)
        c = ops.layer_norm(context.reshape(-1, dim).contiguous(), norm.weight, norm.bias, eps)

        def project(layer, t: torch.Tensor) -> torch.Tensor:
            # stored rows (j, h): the GEMM writes columns j*H + h; the attention kernel reads [B, H, N, d'] with unit
            # stride along d', so the activation (never the weight) is re-laid out
            y = ops.sliced_linear(t, layer.weight, layer.bias, a, dim)
            return y.view(batch, -1, plan.head_dim, plan.num_heads).permute(0, 3, 1, 2).contiguous()

        o = ops.attention(project(cross.q, h), project(cross.k, c), project(cross.v, c), plan.scale, bias)
        return ops.sliced_linear(o.view(rows.shape[0], a), cross.proj.weight, cross.proj.bias, dim, a, residual=rows)


def _check_bias(name: str, bias: torch.Tensor, shape: tuple[int, ...], x: torch.Tensor) -> None:
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {list(shape)}, got {type(bias).__name__}")
    if tuple(bias.shape) != shape:
        raise ValueError(f"{name} must have shape [H, Nq, Nk] = {list(shape)}, got {list(bias.shape)}")
    if bias.dtype != x.dtype:
        raise TypeError(f"{name} is {bias.dtype} but the tokens are {x.dtype}; build it in the tokens' dtype")
    if bias.device != x.device:
        raise ValueError(f"{name} is on {bias.device} but the tokens are on {x.device}")


def check_attention_inputs(x: torch.Tensor, blocks: list[Block], bias: torch.Tensor | None,
                           context: torch.Tensor | None, context_bias: torch.Tensor | None) -> None:
    """Raise a clear error for an attention bias or context that does not fit ``x`` and ``blocks``."""
    batch, tokens, dim = x.shape
    cross = any(block.spec.cross_attn for block in blocks)
    if cross and context is None:
        raise ValueError("blocks with cross-attention need a context [B, M, d] to attend to; got none")
    if context is not None:
        if not cross:
            raise ValueError("a context was given but no block has a cross-attention sublayer")
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"context must be a torch.Tensor [B, M, d], got {type(context).__name__}")
        if context.dim() != 3 or context.shape[0] != batch or context.shape[2] != dim:
            raise ValueError(f"context must be [B, M, d] = [{batch}, M, {dim}], got {list(context.shape)}")
        if context.dtype != x.dtype:
            raise TypeError(f"context is {context.dtype} but the tokens are {x.dtype}")
        if context.device != x.device:
            raise ValueError(f"context is on {context.device} but the tokens are on {x.device}")
    elif context_bias is not None:
        raise ValueError("context_bias was given without a context")
    for heads in sorted({block.spec.num_heads for block in blocks}):
        if bias is not None:
            _check_bias("bias", bias, (heads, tokens, tokens), x)
        if context_bias is not None:
            _check_bias("context_bias", context_bias, (heads, tokens, context.shape[1]), x)


# -- argument checks of the block ops, shared by the kernel backends --------------------------------------------------
def _dtype_list(dtypes: tuple[torch.dtype, ...]) -> str:
    names = [str(dtype) for dtype in dtypes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_lead(op: str, name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...], kernels: str) -> None:
    """The tensor that sets dtype and device for the others: a tensor in one of the dtypes ``kernels`` take."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; the {kernels} kernels take {_dtype_list(dtypes)}")


def check_tensor(op: str, name: str, t: torch.Tensor, like: torch.Tensor, like_name: str, dim: int,
                 dims: str = "") -> None:
    """A tensor with the dtype and device of ``like``, ``dim`` dimensions (``dims`` names them) and unit last stride."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != like.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}, expected {like.dtype} (the dtype of {like_name})")
    if t.device != like.device:
        raise ValueError(f"{op}: {name} is on {t.device}, expected {like.device} (the device of {like_name})")
    if t.dim() != dim:
        raise ValueError(f"{op}: {name} must be {dim}-D{f' {dims}' if dims else ''}, got shape {tuple(t.shape)}")
    if t.stride(-1) != 1:
        raise ValueError(f"{op}: {name} needs last-dim stride 1, got strides {t.stride()}")


def _check_shaped(op: str, name: str, t: torch.Tensor, like: torch.Tensor, like_name: str,
                  shape: tuple[int, ...]) -> None:
    check_tensor(op, name, t, like, like_name, len(shape))
    if tuple(t.shape) != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(t.shape)}")


def _check_row_prefix(op: str, name: str, t: torch.Tensor, like: torch.Tensor, entries: int) -> None:
    check_tensor(op, name, t, like, "x", 1)
    if t.shape[0] < entries:
        raise ValueError(f"{op}: {name} has {t.shape[0]} entries, fewer than n_out={entries}")


def check_sliced_linear(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, n_out: int,
                        k_in: int, activation: str | None, value_weight: torch.Tensor | None,
                        value_bias: torch.Tensor | None, residual: torch.Tensor | None, gamma: torch.Tensor | None,
                        qkv_heads: int | None, seq_len: int | None) -> None:
    """Checks ``sliced_linear``'s arguments after ``x`` passed :func:`check_lead`."""
    check_tensor(op, "x", x, x, "x", 2)
    check_tensor(op, "weight", weight, x, "x", 2)
    m = x.shape[0]
    n_full, k_full = weight.shape
    if not isinstance(k_in, int) or not 1 <= k_in <= k_full:
        raise ValueError(f"{op}: k_in={k_in} must be an int in [1, K_full={k_full}] (weight {tuple(weight.shape)})")
    if not isinstance(n_out, int) or not 1 <= n_out <= n_full:
        raise ValueError(f"{op}: n_out={n_out} must be an int in [1, N_full={n_full}] (weight {tuple(weight.shape)})")
    if x.shape[1] < k_in:
        raise ValueError(f"{op}: x has {x.shape[1]} columns, fewer than k_in={k_in}")
    if activation not in (None, "gelu"):
        raise ValueError(f"{op}: activation must be None or 'gelu', got {activation!r} (the gated FFN is value_weight)")
    if bias is not None:
        _check_row_prefix(op, "bias", bias, x, n_out)
    if value_bias is not None:
        if value_weight is None:
            raise ValueError(f"{op}: value_bias is only used with value_weight (the gated FFN)")
        _check_row_prefix(op, "value_bias", value_bias, x, n_out)
    if value_weight is not None:
        check_tensor(op, "value_weight", value_weight, x, "x", 2)
        if value_weight.shape[0] < n_out or value_weight.shape[1] < k_in:
            raise ValueError(f"{op}: value_weight {tuple(value_weight.shape)} is smaller than [n_out, k_in] = "
                             f"[{n_out}, {k_in}]")
        if activation is not None or qkv_heads is not None:
            raise ValueError(f"{op}: the gated FFN (value_weight) takes no activation and no qkv output")
    if gamma is not None and residual is None:
        raise ValueError(f"{op}: gamma (LayerScale) is only applied together with residual")
    if residual is not None:
        _check_shaped(op, "residual", residual, x, "x", (m, n_out))
    if gamma is not None:
        _check_shaped(op, "gamma", gamma, x, "x", (n_out,))
    if qkv_heads is not None:
        if activation is not None or residual is not None:
            raise ValueError(f"{op}: qkv_heads output takes no activation and no residual")
        if not isinstance(qkv_heads, int) or qkv_heads < 1 or n_out % (3 * qkv_heads):
            raise ValueError(f"{op}: n_out={n_out} must be a multiple of 3 * qkv_heads, qkv_heads={qkv_heads}")
        if not isinstance(seq_len, int) or seq_len < 1 or m % seq_len:
            raise ValueError(f"{op}: qkv_heads needs seq_len >= 1 dividing M={m}, got seq_len={seq_len}")
    elif seq_len is not None:
        raise ValueError(f"{op}: seq_len is only used with qkv_heads")


def check_attention(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                    bias: torch.Tensor | None, max_head_dim: int) -> None:
    """Checks ``attention``'s arguments after ``q`` passed :func:`check_lead`."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(op, name, t, q, "q", 4, "[B, H, N, d']")
    batch, heads, n_q, d = q.shape
    n_k = k.shape[2]
    if k.shape != (batch, heads, n_k, d) or v.shape != k.shape:
        raise ValueError(f"{op}: expected k, v of shape [B={batch}, H={heads}, Nk, d'={d}], got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} (q {tuple(q.shape)})")
    if not 1 <= d <= max_head_dim:
        raise ValueError(f"{op}: head dim d'={d} outside the supported range [1, {max_head_dim}]")
    if n_k < 1:
        raise ValueError(f"{op}: needs at least one key, got k of shape {tuple(k.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale):
        raise TypeError(f"{op}: scale must be a finite real number, got {scale!r}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{op}: bias must be a torch.Tensor, got {type(bias).__name__}")
        if bias.dtype not in (torch.float32, q.dtype):
            raise TypeError(f"{op}: bias has dtype {bias.dtype}, expected torch.float32 or {q.dtype}")
        if bias.device != q.device:
            raise ValueError(f"{op}: bias is on {bias.device}, q is on {q.device}")
        if tuple(bias.shape) != (heads, n_q, n_k):
            raise ValueError(f"{op}: bias must be [H, Nq, Nk] = {(heads, n_q, n_k)}, got {tuple(bias.shape)}")


def check_layer_norm(op: str, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, *,
                     max_width: int) -> None:
    """Checks ``layer_norm``'s arguments after ``x`` passed :func:`check_lead`."""
    check_tensor(op, "x", x, x, "x", 2, "[M, d]")
    d = x.shape[1]
    if d > max_width:
        raise ValueError(f"{op}: d={d} features exceeds the largest supported row, {max_width}")
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"{op}: eps must be a real number, got {eps!r}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_shaped(op, name, t, x, "x", (d,))
