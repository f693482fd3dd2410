"""Fused oneDNN GEMMs for the torch backend on CPUs: bias, GELU / SiLU, residual add and gate multiply in the
GEMM's epilogue (``torch.ops.mkldnn._linear_pointwise``, the ops Inductor's CPU backend uses).

Why: on the CPU, ``F.linear`` in float32 goes to MKL's sgemm, which on AMD Zen 4 runs about 1.5x slower than
oneDNN's AVX-512 GEMM (measured here), and every ``F.linear`` + ``gelu`` + ``add`` chain passes over the activations
three times. oneDNN takes a prefix view of a weight in place when the view is dense: the row prefixes (qkv, fc1,
fc3) always are, the column prefixes (out-projection, fc2) are once the weight is stored column-major
(:meth:`slimkern.blocks.Block.set_column_major`; for a row-major ``W[:, :k]`` oneDNN falls back to a reference
kernel hundreds of times slower, so :func:`dense` decides).

These ops are used only where they are checked: on the CPU, in float32 or bfloat16, outside autograd and tracing,
and when the fused-GEMM probes of :mod:`slimkern.probes` pass on this machine (:func:`usable`, once per process);
anywhere else the torch backend runs its plain ops.
"""

from __future__ import annotations

import functools
import warnings

import torch

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
    from ...probes import fused_gemm_cases, probe

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
