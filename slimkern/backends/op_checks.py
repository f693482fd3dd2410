"""Argument checks of the block ops (sliced_linear, attention, layer_norm), shared by the kernel backends.

The Triton and CUDA wrappers take the same arguments and layouts, so they share these checks and their messages;
each wrapper keeps only what is its own (the dtypes its kernels take, Triton's ``"swiglu"``, CUDA's
``value_weight``, CUDA's device check). Every message starts with the op's name and names the offending
argument with its shape, dtype, stride or device.
"""

from __future__ import annotations

import math
from numbers import Real

import torch


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


def check_sliced_linear(
    op: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    n_out: int,
    k_in: int,
    halves_columns: bool,
    has_activation: bool,
    residual: torch.Tensor | None,
    gamma: torch.Tensor | None,
    qkv_heads: int | None,
    seq_len: int | None,
    out: torch.Tensor | None,
) -> tuple[int, ...]:
    """Checks ``sliced_linear``'s arguments after ``x`` passed :func:`check_lead`; returns the output's shape.

    ``halves_columns``: the epilogue turns column pairs into one output column (Triton's interleaved swiglu).
    """
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
    if bias is not None:
        check_tensor(op, "bias", bias, x, "x", 1)
        if bias.shape[0] < n_out:
            raise ValueError(f"{op}: bias has {bias.shape[0]} entries, fewer than n_out={n_out}")
    n_cols = n_out // 2 if halves_columns else n_out
    if gamma is not None and residual is None:
        raise ValueError(f"{op}: gamma (LayerScale) is only applied together with residual")
    if residual is not None:
        _check_shaped(op, "residual", residual, x, "x", (m, n_cols))
    if gamma is not None:
        _check_shaped(op, "gamma", gamma, x, "x", (n_cols,))
    if qkv_heads is not None:
        if has_activation or residual is not None:
            raise ValueError(f"{op}: qkv_heads output takes no activation and no residual")
        if not isinstance(qkv_heads, int) or qkv_heads < 1 or n_out % (3 * qkv_heads):
            raise ValueError(f"{op}: n_out={n_out} must be a multiple of 3 * qkv_heads, qkv_heads={qkv_heads}")
        if not isinstance(seq_len, int) or seq_len < 1 or m % seq_len:
            raise ValueError(f"{op}: qkv_heads needs seq_len >= 1 dividing M={m}, got seq_len={seq_len}")
        out_shape = (3, m // seq_len, qkv_heads, seq_len, n_out // (3 * qkv_heads))
    elif seq_len is not None:
        raise ValueError(f"{op}: seq_len is only used with qkv_heads")
    else:
        out_shape = (m, n_cols)
    if out is not None:
        _check_shaped(op, "out", out, x, "x", out_shape)
    return out_shape


def check_attention(
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    out_layout: str,
    out: torch.Tensor | None,
    max_head_dim: int,
) -> tuple[int, ...]:
    """Checks ``attention``'s arguments after ``q`` passed :func:`check_lead`; returns the output's shape."""
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
    if out_layout == "bnjh":
        out_shape = (batch, n_q, d * heads)
    elif out_layout == "bhnd":
        out_shape = (batch, heads, n_q, d)
    else:
        raise ValueError(f"{op}: out_layout must be 'bnjh' or 'bhnd', got {out_layout!r}")
    if out is not None:
        _check_shaped(op, "out", out, q, "q", out_shape)
    return out_shape


def check_layer_norm(
    op: str,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    residual: torch.Tensor | None,
    out: torch.Tensor | None,
    residual_out: torch.Tensor | None,
    max_width: int,
) -> None:
    """Checks ``layer_norm``'s arguments after ``x`` passed :func:`check_lead`."""
    check_tensor(op, "x", x, x, "x", 2, "[M, d]")
    m, d = x.shape
    if d > max_width:
        raise ValueError(f"{op}: d={d} features exceeds the largest supported row, {max_width}")
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"{op}: eps must be a real number, got {eps!r}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_shaped(op, name, t, x, "x", (d,))
    if residual is None and residual_out is not None:
        raise ValueError(f"{op}: residual_out is only written when residual is given")
    for name, t in (("residual", residual), ("residual_out", residual_out), ("out", out)):
        if t is not None:
            _check_shaped(op, name, t, x, "x", (m, d))
