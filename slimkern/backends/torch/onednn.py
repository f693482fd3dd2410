"""Fused oneDNN GEMMs for the torch backend on CPUs: bias, GELU / SiLU, residual add and gate multiply in the
GEMM's epilogue (``torch.ops.mkldnn._linear_pointwise``, the ops Inductor's CPU backend uses).

Why: on the CPU, ``F.linear`` in float32 goes to MKL's sgemm, which on AMD Zen 4 runs about 1.5x slower than
oneDNN's AVX-512 GEMM (measured here), and every ``F.linear`` + ``gelu`` + ``add`` chain passes over the activations
three times. oneDNN takes a prefix view of a weight in place when the view is dense: the row prefixes (qkv, fc1,
fc3) always are, the column prefixes (out-projection, fc2) are once the weight is stored column-major
(:meth:`slimkern.blocks.Block.set_column_major`; for a row-major ``W[:, :k]`` oneDNN falls back to a reference
kernel hundreds of times slower, so :func:`dense` decides).

These ops are used only where they are checked: on the CPU, in float32 or bfloat16, outside autograd and tracing,
and when the fused-GEMM probes (:func:`fused_gemm_cases`, run by :mod:`slimkern.probe_runner`) pass on this machine
(:func:`usable`, once per process);
anywhere else the torch backend runs its plain ops.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from ...probe_runner import FUSED_GEMM, Case, NotApplicable, probe

#: Dtypes with a fused oneDNN path (float16 and float64 keep the plain ops).
DTYPES = (torch.float32, torch.bfloat16)
_ACTIVATIONS = {"none": ("none", ""), "gelu": ("gelu", "none"), "silu": ("swish", "")}  # oneDNN attr, algorithm


def supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU have the fused ops for ``device`` and ``dtype`` (not yet whether they are
    right). oneDNN's bfloat16 ops need AVX-512 (BW/VL/DQ), AVX-NE-CONVERT or AMX; on other CPUs they raise."""
    if not (device.type == "cpu" and dtype in DTYPES and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    return dtype != torch.bfloat16 or (hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
                                       and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def usable(dtype: torch.dtype) -> bool:
    """:func:`supported` on the CPU and every fused-GEMM probe passes here (else a warning, and plain ops)."""
    if not supported(torch.device("cpu"), dtype):
        return False
    wrong = [r for r in probe(fused_gemm_cases(), "cpu", dtype) if not r.ok]
    if wrong:
        warnings.warn(f"slimkern: oneDNN's fused GEMM computes {str(dtype).removeprefix('torch.')} wrongly on this "
                      f"CPU ({wrong[0]}); the torch backend runs its plain (slower) ops instead", stacklevel=2)
    return not wrong


def active(x: torch.Tensor) -> bool:
    """Run the fused ops on ``x``? (CPU, a fused dtype that passed its probes, no autograd, no tracing.)"""
    return (x.device.type == "cpu" and x.dtype in DTYPES and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and usable(x.dtype))


def dense(weight: torch.Tensor) -> bool:
    """Whether oneDNN reads this 2-D weight view at full speed: row-major or column-major without gaps."""
    rows, cols = weight.shape
    return weight.stride() in ((cols, 1), (1, rows)) or weight.is_contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
           ) -> torch.Tensor:
    """``activation(x W^T + b)`` in one pass; ``activation`` is ``"none"``, ``"gelu"`` (exact, erf) or ``"silu"``."""
    attr, algorithm = _ACTIVATIONS[activation]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, other: torch.Tensor
               ) -> torch.Tensor:
    """``other + (x W^T + b)`` in one pass (the residual of a block)."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")


def linear_mul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, other: torch.Tensor
               ) -> torch.Tensor:
    """``other * (x W^T + b)`` in one pass (the value half of a gated FFN)."""
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "mul")


def fused_gemm_cases() -> list[Case]:
    """The oneDNN GEMMs with fused epilogues of the torch backend's CPU fast path, on the weight views it passes
    (row prefixes of row-major weights; column prefixes of column-major ones) at the odd widths slimming gives."""
    def case(name, m, k, n, kept, epilogue, columns=False):
        def fn(make):
            if columns:  # out-proj / fc2: column-major storage, W[:, :kept] is a dense transposed block
                (w, w64), (x, x64), (b, b64) = make(k, n, scale=kept**-0.5), make(m, kept), make(n)
                view, view64, bias, bias64 = w.t()[:, :kept], w64.t()[:, :kept], b, b64
            else:  # qkv / fc1 / fc3: row prefixes
                (w, w64), (x, x64), (b, b64) = make(n, k, scale=k**-0.5), make(m, k), make(n)
                view, view64, bias, bias64 = w[:kept], w64[:kept], b[:kept], b64[:kept]
            if not supported(x.device, x.dtype):
                raise NotApplicable
            ref = F.linear(x64, view64, bias64)
            if epilogue in ("none", "gelu", "silu"):
                return linear(x, view, bias, epilogue), ref if epilogue == "none" else getattr(F, epilogue)(ref)
            other, other64 = make(*ref.shape)
            if epilogue == "mul":
                return linear_mul(x, view, bias, other), ref * other64
            return linear_add(x, view, bias, other), ref + other64
        return FUSED_GEMM, name, fn

    return [case("qkv row prefix", 197, 96, 288, 63, "none"), case("fc1 row prefix + GELU", 50, 768, 64, 41, "gelu"),
            case("fc1 row prefix + SiLU", 37, 96, 192, 38, "silu"),
            case("fc3 row prefix x gate", 37, 96, 192, 38, "mul"),
            case("out-proj column prefix + residual", 197, 384, 96, 18, "add", columns=True),
            case("fc2 column prefix + residual", 50, 3072, 96, 307, "add", columns=True),
            case("fc2 column prefix, d_h'=1", 19, 256, 64, 1, "add", columns=True),
            case("out-proj column prefix (LayerScale)", 37, 384, 96, 21, "none", columns=True)] + [
            # the stem's GEMM at K = 64 * bands (8x8 patches of 1..16 bands: the AMX convolution's failing sizes)
            case(f"stem, {bands} bands", 2 * 13, 64 * bands, 40, 40, "none") for bands in range(1, 17)]
