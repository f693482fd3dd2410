"""The CUDA kernels as Python functions: the same operations, arguments and layouts as ``slimkern.backends.triton``.

Every argument is checked here, before the extension is touched, with the offending shapes, dtypes and devices in
the message; so the checks run (and are tested) on CPU or meta tensors on machines without a GPU, and a bad call
never triggers a build. The device check comes last: CPU tensors that pass every other check raise a ValueError
saying the kernels need CUDA tensors. The binding (``csrc/binding.cpp``) repeats the essential checks.

Differences from the Triton ops: bfloat16 and float16 only (the ``cuda`` backend runs float32 models with the
torch backend's ops); the gated FFN takes its value weight separately (``value_weight``, fc3) instead of Triton's
interleaved ``"swiglu"`` rows, because that is how the blocks store it.
"""

from __future__ import annotations

import math

import torch

from ..base import check_attention, check_layer_norm, check_lead, check_sliced_linear, check_tensor

DTYPES = (torch.bfloat16, torch.float16)
#: Row strides of allocated 2-D outputs are padded to this many elements, so the next GEMM reads them with
#: 16-byte cp.async copies.
ROW_ALIGN = 16
MAX_HEAD_DIM = 256
MAX_NORM_WIDTH = 8192


def _ext():
    from .build import extension

    return extension()  # cached after the first call: the module, or the same ExtensionUnavailable


def _check_cuda(op: str, device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"{op}: the CUDA kernels need CUDA tensors, got tensors on {device}")


def _aligned_rows(rows: int, cols: int, like: torch.Tensor, lead: tuple[int, ...] = ()) -> torch.Tensor:
    width = math.ceil(cols / ROW_ALIGN) * ROW_ALIGN
    return torch.empty((*lead, rows, width), dtype=like.dtype, device=like.device)[..., :cols]


def sliced_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    n_out: int,
    k_in: int,
    activation: str | None = None,
    value_weight: torch.Tensor | None = None,
    value_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    gamma: torch.Tensor | None = None,
    qkv_heads: int | None = None,
    seq_len: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = epilogue(X[:, :k_in] @ W[:n_out, :k_in]^T + bias[:n_out])`` reading the weight prefix in place.

    Args:
        x: ``[M, >=k_in]``, bf16/fp16, any row stride, last-dim stride 1.
        weight: the full stored weight ``[N_full, K_full]`` (last-dim stride 1), same dtype as ``x``.
        bias: optional ``[>=n_out]``; ``bias[:n_out]`` is used.
        n_out, k_in: GEMM output columns (rows of ``weight`` kept) and reduction length (columns kept).
        activation: ``None`` or ``"gelu"`` (exact erf).
        value_weight, value_bias: gated FFN (SwiGLU with separate weights): ``Y = silu(X W^T + b) * (X V^T + bv)``
            with ``V = value_weight[:n_out, :k_in]`` (fc3), read in place like ``weight``; no ``activation``.
        residual: optional ``[M, n_out]``; then ``Y = residual + gamma * Y``. gamma: LayerScale ``[n_out]``.
        qkv_heads, seq_len: write q, k, v as ``[3, B, H, seq_len, d']`` (``d' = n_out // 3H``): column
            ``j*3H + t*H + h`` of row ``b*seq_len + n`` goes to ``[t, b, h, n, j]``.
        out: optional preallocated output.

    Returns:
        ``[M, n_out]`` (row stride padded to a multiple of 16 when allocated here) or the qkv tensor; fp32
        accumulation and epilogue, one rounding on store.

    Raises:
        TypeError: non-tensor inputs, unsupported or mixed dtypes. ValueError: bad shapes, widths, strides, devices
        or option combinations. ExtensionUnavailable: the extension cannot be loaded (the reason says why).

    Equivalent PyTorch::

        y = F.linear(x[:, :k_in], weight[:n_out, :k_in], bias[:n_out])
        y = F.gelu(y) if activation == "gelu" else y
        y = F.silu(y) * F.linear(x[:, :k_in], value_weight[:n_out, :k_in], value_bias[:n_out]) if value_weight else y
        y = y if residual is None else residual + gamma * y
    """
    op = "sliced_linear"
    check_lead(op, "x", x, DTYPES, "CUDA")
    if activation not in (None, "gelu"):
        raise ValueError(f"{op}: activation must be None or 'gelu', got {activation!r} (the gated FFN is value_weight)")
    check_sliced_linear(op, x, weight, bias, n_out=n_out, k_in=k_in, halves_columns=False,
                        has_activation=activation is not None, residual=residual, gamma=gamma, qkv_heads=qkv_heads,
                        seq_len=seq_len, out=out)
    if value_bias is not None:
        if value_weight is None:
            raise ValueError(f"{op}: value_bias is only used with value_weight (the gated FFN)")
        check_tensor(op, "value_bias", value_bias, x, "x", 1)
        if value_bias.shape[0] < n_out:
            raise ValueError(f"{op}: value_bias has {value_bias.shape[0]} entries, fewer than n_out={n_out}")
    if value_weight is not None:
        check_tensor(op, "value_weight", value_weight, x, "x", 2)
        if value_weight.shape[0] < n_out or value_weight.shape[1] < k_in:
            raise ValueError(f"{op}: value_weight {tuple(value_weight.shape)} is smaller than [n_out, k_in] = "
                             f"[{n_out}, {k_in}]")
        if activation is not None or qkv_heads is not None:
            raise ValueError(f"{op}: the gated FFN (value_weight) takes no activation and no qkv output")
    _check_cuda(op, x.device)
    return run_sliced_linear(x, weight, bias, n_out, k_in, activation == "gelu", value_weight, value_bias, residual,
                             gamma, qkv_heads or 0, seq_len or 0, out)


def run_sliced_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int, k_in: int,
                      gelu: bool = False, value_weight: torch.Tensor | None = None,
                      value_bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                      gamma: torch.Tensor | None = None, qkv_heads: int = 0, seq_len: int = 0,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sliced_linear` without the Python-side checks (the binding's checks still run): for the backend,
    whose arguments are right by construction, so that batch-1 forwards are not bound by Python overhead."""
    if out is None:
        out = _aligned_rows(x.shape[0], n_out, x) if not qkv_heads else torch.empty(
            (3, x.shape[0] // seq_len, qkv_heads, seq_len, n_out // (3 * qkv_heads)), dtype=x.dtype, device=x.device)
    if x.shape[0] > 0:
        _ext().sliced_linear(x, weight, bias, value_weight, value_bias, residual, gamma, out, n_out, k_in, gelu,
                             qkv_heads, seq_len)
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    out_layout: str = "bnjh",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``O = softmax(Q K^T * scale + bias) V`` per (batch, head), fp32 online softmax on the tensor cores.

    Args:
        q: ``[B, H, Nq, d']``; k, v: ``[B, H, Nk, d']`` (``Nq != Nk`` for cross attention). bf16/fp16, any strides
            with last-dim stride 1, ``1 <= d' <= 256`` (padded to 16/32/64/128/256 inside the kernel, never in
            memory).
        scale: logit scale, usually ``d'**-0.5``.
        bias: optional additive logits bias ``[H, Nq, Nk]`` (fp32 or the dtype of q, any strides), broadcast over B;
            finite entries (mask with a large negative value, not ``-inf``).
        out_layout: ``"bnjh"`` -> ``[B, Nq, d'*H]`` with column ``j*H + h`` (the out-projection's input layout;
            allocated with the row stride padded to a multiple of 16), or ``"bhnd"`` -> ``[B, H, Nq, d']``.
        out: optional preallocated output of that shape, dtype of q, last-dim stride 1.

    Returns:
        The attention output in the dtype of q.

    Raises:
        TypeError: non-tensor inputs, non-real scale, unsupported or mixed dtypes. ValueError: bad shapes, strides,
        devices, head dim or layout. ExtensionUnavailable: the extension cannot be loaded.

    Equivalent PyTorch::

        o = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, dim=-1) @ v         # [B, H, Nq, d']
        o = o.permute(0, 2, 3, 1).reshape(B, Nq, d' * H) if out_layout == "bnjh" else o
    """
    op = "attention"
    check_lead(op, "q", q, DTYPES, "CUDA")
    check_attention(op, q, k, v, scale=scale, bias=bias, out_layout=out_layout, out=out, max_head_dim=MAX_HEAD_DIM)
    _check_cuda(op, q.device)
    return run_attention(q, k, v, float(scale), bias, out_layout == "bnjh", out)


def run_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor | None = None,
                  bnjh: bool = True, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attention` without the Python-side checks (the binding's checks still run); for the backend."""
    batch, heads, n_q, d = q.shape
    if out is None:
        out = _aligned_rows(n_q, d * heads, q, (batch,)) if bnjh else torch.empty(q.shape, dtype=q.dtype,
                                                                                  device=q.device)
    if batch * heads * n_q > 0:
        _ext().attention(q, k, v, bias, out, scale, bnjh)
    return out


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    *,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (s - mean(s)) / sqrt(var(s) + eps) * weight + bias`` per row, with ``s = x`` or ``s = x + residual``.

    Args:
        x: ``[M, d]``, bf16/fp16, any row stride, last-dim stride 1, ``d <= 8192``.
        weight, bias: ``[d]`` in the dtype of x, or None. eps: added to the biased variance.
        residual: optional ``[M, d]`` added to x before the norm.
        out, residual_out: optional preallocated ``[M, d]`` outputs for y and (with residual) s.

    Returns:
        ``y``, or ``(y, s)`` with a residual; fp32 statistics, y computed from the fp32 sum.

    Raises:
        TypeError: non-tensor inputs, non-real eps, unsupported or mixed dtypes. ValueError: bad shapes, strides,
        devices or d too large. ExtensionUnavailable: the extension cannot be loaded.

    Equivalent PyTorch::

        s = x if residual is None else x + residual
        y = F.layer_norm(s, (d,), weight, bias, eps)
    """
    op = "layer_norm"
    check_lead(op, "x", x, DTYPES, "CUDA")
    check_layer_norm(op, x, weight, bias, eps, residual=residual, out=out, residual_out=residual_out,
                     max_width=MAX_NORM_WIDTH)
    _check_cuda(op, x.device)
    return run_layer_norm(x, weight, bias, float(eps), residual, out, residual_out)


def run_layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                   residual: torch.Tensor | None = None, out: torch.Tensor | None = None,
                   residual_out: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`layer_norm` without the Python-side checks (the binding's checks still run); for the backend."""
    m, d = x.shape
    out = torch.empty((m, d), dtype=x.dtype, device=x.device) if out is None else out
    if residual is not None and residual_out is None:
        residual_out = torch.empty((m, d), dtype=x.dtype, device=x.device)
    if m > 0 and d > 0:
        _ext().layer_norm(x, weight, bias, residual, out, residual_out, eps)
    return out if residual is None else (out, residual_out)
