"""The kernel backends' ops as PyTorch custom ops: ``slimkern::<backend>_<op>`` for ``sliced_linear``, ``attention``
and ``layer_norm``.

Registered with :func:`torch.library.custom_op`, a kernel is an opaque node that ``torch.compile(fullgraph=True)``,
``torch.export`` and CUDA-graph capture see through: each op has a fake implementation (output shape, dtype and
strides only, computed without running anything) and an autograd registration. No kernel has a backward, so
backpropagating through one raises an error that names the op and the backend to train with.

The Triton and CUDA kernels take the same arguments and write the same layouts, so the schemas, the output
allocation (shared by the real and the fake implementations, strides included) and the fakes live here once. The
ops are the unchecked entry points that the backends call; the checked Python functions of each backend
(``slimkern.backends.triton.sliced_linear``, ...) validate every argument first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import torch

from .base import check_attention, check_layer_norm, check_lead, check_sliced_linear

#: Row strides of allocated 2-D outputs are padded to this many elements, so the next GEMM reads them aligned
#: (Triton specialises on strides divisible by 16; the CUDA kernels copy 16-byte chunks).
ROW_ALIGN = 16

#: The ops' signatures; each implementation takes them with the same names and defaults.
SCHEMAS = {
    "sliced_linear": "(Tensor x, Tensor weight, Tensor? bias, int n_out, int k_in, bool gelu=False, "
                     "Tensor? value_weight=None, Tensor? value_bias=None, Tensor? residual=None, Tensor? gamma=None, "
                     "int qkv_heads=0, int seq_len=0) -> Tensor",
    "attention": "(Tensor q, Tensor k, Tensor v, float scale, Tensor? bias=None) -> Tensor",
    "layer_norm": "(Tensor x, Tensor? weight, Tensor? bias, float eps) -> Tensor",
}


def aligned_rows(rows: int, cols: int, like: torch.Tensor, lead: tuple[int, ...] = ()) -> torch.Tensor:
    """An uninitialised ``[*lead, rows, cols]`` tensor whose row stride is padded to a multiple of :data:`ROW_ALIGN`."""
    width = math.ceil(cols / ROW_ALIGN) * ROW_ALIGN
    return torch.empty((*lead, rows, width), dtype=like.dtype, device=like.device)[..., :cols]


def sliced_linear_output(x: torch.Tensor, n_out: int, qkv_heads: int, seq_len: int) -> torch.Tensor:
    """``[M, n_out]`` with aligned rows, or with ``qkv_heads`` the contiguous ``[3, B, H, seq_len, d']``."""
    if qkv_heads:
        shape = (3, x.shape[0] // seq_len, qkv_heads, seq_len, n_out // (3 * qkv_heads))
        return torch.empty(shape, dtype=x.dtype, device=x.device)
    return aligned_rows(x.shape[0], n_out, x)


def attention_output(q: torch.Tensor) -> torch.Tensor:
    """``[B, Nq, d'*H]`` (column ``j*H + h``: the out-projection's input layout) with aligned rows."""
    batch, heads, n_q, d = q.shape
    return aligned_rows(n_q, d * heads, q, (batch,))


def layer_norm_output(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _sliced_linear_fake(x, weight, bias, n_out, k_in, gelu=False, value_weight=None, value_bias=None,
                        residual=None, gamma=None, qkv_heads=0, seq_len=0):
    return sliced_linear_output(x, n_out, qkv_heads, seq_len)


def _attention_fake(q, k, v, scale, bias=None):
    return attention_output(q)


def _layer_norm_fake(x, weight, bias, eps):
    return layer_norm_output(x)


FAKES = {"sliced_linear": _sliced_linear_fake, "attention": _attention_fake, "layer_norm": _layer_norm_fake}


def _no_backward(qualname: str) -> Callable:
    def backward(ctx, grad):
        raise RuntimeError(f"{qualname} has no backward; train with backend='torch' (this backend is for inference)")

    return backward


def _no_context(ctx, inputs, output) -> None:
    pass


def define_ops(backend: str, impls: dict[str, Callable]) -> SimpleNamespace:
    """Register ``slimkern::<backend>_<op>`` for each of :data:`SCHEMAS` with its implementation in ``impls`` (which
    takes the schema's arguments, names and defaults) and return the ops as ``.sliced_linear``, ``.attention``,
    ``.layer_norm``."""
    ops = {}
    for name, schema in SCHEMAS.items():
        qualname = f"slimkern::{backend}_{name}"
        op = torch.library.custom_op(qualname, impls[name], mutates_args=(), schema=schema)
        op.register_fake(FAKES[name])
        op.register_autograd(_no_backward(qualname), setup_context=_no_context)
        ops[name] = op
    return SimpleNamespace(**ops)


class CheckedOps:
    """The checked Python entry points of one kernel backend's ops: every argument is checked (with the offending
    shape, dtype, stride or device in the message) before the op runs, so a bad call never reaches a kernel.

    Args:
        backend: the backend's name (``"triton"``, ``"cuda"``).
        kernels: how messages name the kernels (``"Triton"``, ``"CUDA"``).
        dtypes: the dtypes the kernels take.
        ops: the backend's custom ops (from :func:`define_ops`).
        max_head_dim, max_norm_width: the largest head dim of ``attention`` and row of ``layer_norm``.
        device_type: the device the kernels need (checked last, so other mistakes are reported first), or ``None``.
    """

    def __init__(self, backend: str, kernels: str, dtypes: tuple[torch.dtype, ...], ops: SimpleNamespace, *,
                 max_head_dim: int, max_norm_width: int, device_type: str | None = None) -> None:
        self.backend, self.kernels, self.dtypes, self.ops = backend, kernels, dtypes, ops
        self.max_head_dim, self.max_norm_width, self.device_type = max_head_dim, max_norm_width, device_type

    def _check_device(self, op: str, device: torch.device) -> None:
        if self.device_type is not None and device.type != self.device_type:
            raise ValueError(f"{op}: the {self.kernels} kernels need {self.device_type.upper()} tensors, got tensors "
                             f"on {device}")

    def sliced_linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, n_out: int,
                      k_in: int, activation: str | None = None, value_weight: torch.Tensor | None = None,
                      value_bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                      gamma: torch.Tensor | None = None, qkv_heads: int | None = None,
                      seq_len: int | None = None) -> torch.Tensor:
        """``Y = epilogue(X[:, :k_in] @ W[:n_out, :k_in]^T + bias[:n_out])`` reading the weight prefix in place.

        Args:
            x: ``[M, >=k_in]``, any row stride, last-dim stride 1.
            weight: the full stored weight ``[N_full, K_full]`` (last-dim stride 1), same dtype as ``x``.
            bias: optional ``[>=n_out]``; ``bias[:n_out]`` is used.
            n_out, k_in: GEMM output columns (rows of ``weight`` kept) and reduction length (columns kept).
            activation: ``None`` or ``"gelu"`` (exact erf).
            value_weight, value_bias: the gated FFN (SwiGLU with separate weights):
                ``Y = silu(X W^T + b) * (X V^T + b_v)`` with ``V = value_weight[:n_out, :k_in]`` (fc3), read in place
                like ``weight``; no ``activation``.
            residual: optional ``[M, n_out]``; then ``Y = residual + gamma * Y``. gamma: LayerScale ``[n_out]``.
            qkv_heads, seq_len: write q, k, v as ``[3, B, H, seq_len, d']`` (``d' = n_out // 3H``,
                ``M = B * seq_len``): column ``j*3H + t*H + h`` of row ``b*seq_len + n`` goes to ``[t, b, h, n, j]``.

        Returns:
            ``[M, n_out]`` with its row stride padded to a multiple of 16 elements (the next GEMM reads it aligned),
            or the contiguous qkv tensor; in the dtype of ``x``. Accumulation and the whole epilogue run in fp32, the
            result is rounded once, on store.

        Raises:
            TypeError: non-tensor inputs, unsupported or mixed dtypes. ValueError: bad shapes, sizes, strides,
            devices or option combinations.

        Equivalent PyTorch (without ``qkv_heads``)::

            y = F.linear(x[:, :k_in], weight[:n_out, :k_in], bias[:n_out])
            y = F.gelu(y) if activation == "gelu" else y
            y = F.silu(y) * F.linear(x[:, :k_in], value_weight[:n_out, :k_in], value_bias[:n_out]) if gated else y
            y = y if residual is None else residual + gamma * y
        """
        op = "sliced_linear"
        check_lead(op, "x", x, self.dtypes, self.kernels)
        check_sliced_linear(op, x, weight, bias, n_out=n_out, k_in=k_in, activation=activation,
                            value_weight=value_weight, value_bias=value_bias, residual=residual, gamma=gamma,
                            qkv_heads=qkv_heads, seq_len=seq_len)
        self._check_device(op, x.device)
        return self.ops.sliced_linear(x, weight, bias, n_out, k_in, gelu=activation == "gelu",
                                      value_weight=value_weight, value_bias=value_bias, residual=residual,
                                      gamma=gamma, qkv_heads=qkv_heads or 0, seq_len=seq_len or 0)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """``O = softmax(Q K^T * scale + bias) V`` per (batch, head), fp32 online softmax, written as the
        out-projection reads it.

        Args:
            q: ``[B, H, Nq, d']``; k, v: ``[B, H, Nk, d']`` (``Nq != Nk``: cross attention). One dtype, any strides
                with last-dim stride 1, ``1 <= d' <= 256`` (padded to a power of two in registers, never in memory).
            scale: logit scale, usually ``d'**-0.5`` (slimming uses the reduced head dim).
            bias: optional additive logits bias ``[H, Nq, Nk]`` (fp32 or the dtype of q, any strides), broadcast
                over B. Entries must be finite: mask with a large negative value, not ``-inf``.

        Returns:
            ``[B, Nq, d'*H]`` with column ``j*H + h`` (the out-projection's input layout), its row stride padded to a
            multiple of 16 elements (``.view(B * Nq, -1)`` still works), in the dtype of q. Scores, softmax
            statistics and the P @ V accumulation are fp32.

        Raises:
            TypeError: non-tensor inputs, non-real scale, unsupported or mixed dtypes. ValueError: bad shapes,
            strides, devices or head dim.

        Equivalent PyTorch::

            o = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1) @ v         # [B, H, Nq, d']
            o = o.permute(0, 2, 3, 1).reshape(B, Nq, d' * H)
        """
        op = "attention"
        check_lead(op, "q", q, self.dtypes, self.kernels)
        check_attention(op, q, k, v, scale=scale, bias=bias, max_head_dim=self.max_head_dim)
        self._check_device(op, q.device)
        return self.ops.attention(q, k, v, float(scale), bias)

    def layer_norm(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float) -> torch.Tensor:
        """``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` per row.

        Args:
            x: ``[M, d]``, any row stride, last-dim stride 1, ``d <= 8192``.
            weight, bias: ``[d]`` in the dtype of x, or None (no scale / no shift: bias-free norms).
            eps: added to the biased variance.

        Returns:
            ``[M, d]`` contiguous, in the dtype of x; mean and variance in fp32.

        Raises:
            TypeError: non-tensor inputs, non-real eps, unsupported or mixed dtypes. ValueError: bad shapes,
            strides, devices or d too large.

        Equivalent PyTorch: ``F.layer_norm(x, (d,), weight, bias, eps)``.
        """
        op = "layer_norm"
        check_lead(op, "x", x, self.dtypes, self.kernels)
        check_layer_norm(op, x, weight, bias, eps, max_width=self.max_norm_width)
        self._check_device(op, x.device)
        return self.ops.layer_norm(x, weight, bias, float(eps))
