"""Shared by the kernel tests: device, per-dtype tolerances and a verbose float64 comparison."""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
DTYPES = pytest.mark.parametrize("dtype", list(TOL), ids=["fp32", "bf16", "fp16"])


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """Shapes equal, every output written (the tests poison outputs with NaN), relative error below ``tol``."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    bad = (~torch.isfinite(out)).sum().item()
    assert bad == 0, f"{bad} of {out.numel()} outputs not finite (unwritten, or read outside the kept prefix)"
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < tol, f"relative error {err:.3e} >= {tol:.0e}"
