"""Shared by the kernel tests: device, the tolerances of each backend's ops and a verbose float64 comparison."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from slimkern.backends.registry import _BACKENDS
from slimkern.backends.triton import TritonBackend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = pytest.mark.parametrize("dtype", list(TritonBackend.op_tolerances), ids=["fp32", "bf16", "fp16"])


def op_tolerance(op: Callable, dtype: torch.dtype) -> float:
    """The tolerance the op's own backend (the package it comes from) promises for ``dtype``."""
    backend = op.__module__.split(".")[2]  # slimkern.backends.<name>....
    return _BACKENDS[backend].op_tolerances[dtype]


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """Shapes equal, every output written (the tests poison outputs with NaN), relative error below ``tol``."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    bad = (~torch.isfinite(out)).sum().item()
    assert bad == 0, f"{bad} of {out.numel()} outputs not finite (unwritten, or read outside the kept prefix)"
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < tol, f"relative error {err:.3e} >= {tol:.0e}"
