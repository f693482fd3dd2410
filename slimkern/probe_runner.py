"""Running op probes: each case computes an op in the dtype under test and the same op in float64 on the same rounded
random inputs; the result is their relative error against the dtype's tolerance.

The cases themselves live beside what they check (:mod:`slimkern.probes` for the ops of the torch runtime,
:mod:`slimkern.backends.torch.onednn` for its fused GEMMs); this module is the leaf both import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Largest accepted ``||out - ref|| / ||ref||`` of ONE op per dtype: several units of the dtype's rounding for
#: sums over a few thousand terms, and far below the O(1) error of a wrong kernel.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
SEED = 12
#: The op name of the fused oneDNN GEMM probes: optional, the torch backend runs plain ops where they fail.
FUSED_GEMM = "fused GEMM (oneDNN, CPU fast path)"


@dataclass(frozen=True)
class ProbeResult:
    """One probe: the op, the case, its relative error against float64 and the tolerance."""

    op: str
    case: str
    dtype: torch.dtype
    device: str
    rel_error: float
    tolerance: float
    #: False for an op the runtime can do without (the fused GEMMs: plain ops replace them where they are wrong).
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.rel_error <= self.tolerance  # NaN fails

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "WRONG"
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"{self.op} [{self.case}] in {dtype} on {self.device}: relative error {self.rel_error:.2g} "
                f"(tolerance {self.tolerance:g}) {verdict}")


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if out.shape != ref.shape:
        return math.inf
    return ((out - ref).norm() / ref.norm()).item()


class NotApplicable(Exception):
    """Raised by a case that does not exist for this device and dtype (the fused GEMMs outside float32/bfloat16
    on the CPU); the case is left out."""


# Each case: (op, case, fn) with fn(make) -> (computed, reference); make(*shape) gives a random tensor in the dtype
# under test and the same values in float64.
Case = tuple[str, str, Callable]


def probe(selected: list[Case], device: str, dtype: torch.dtype) -> tuple[ProbeResult, ...]:
    """Run ``selected`` cases on ``device`` in ``dtype`` (not cached)."""
    generator = torch.Generator().manual_seed(SEED)

    def make(*shape: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        values = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
        return values.to(device), values.to(device, torch.float64)

    results = []
    for op, case, fn in selected:
        with torch.no_grad():
            try:
                out, ref = fn(make)
                error = _rel_error(out, ref)
            except NotApplicable:
                continue
            except RuntimeError:  # an op this dtype cannot run here counts as wrong
                error = math.inf
        results.append(ProbeResult(op, case, dtype, device, error, TOLERANCE[dtype], required=op != FUSED_GEMM))
    return tuple(results)
