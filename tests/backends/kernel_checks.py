"""Shared by the kernel tests: device, the tolerances of each backend's ops and a verbose float64 comparison."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

from slimkern.backends.registry import _BACKENDS
from slimkern.backends.triton import TritonBackend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = pytest.mark.parametrize("dtype", list(TritonBackend.op_tolerances), ids=["fp32", "bf16", "fp16"])


def op_tolerance(op: Callable, dtype: torch.dtype) -> float:
    """The tolerance the op's own backend promises for ``dtype`` (ops are methods of their backend's CheckedOps)."""
    return _BACKENDS[op.__self__.backend].op_tolerances[dtype]


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Every tensor allocated inside is filled with NaN (PyTorch's deterministic mode fills uninitialised memory):
    an op's output element its kernel never writes stays NaN, which :func:`assert_close` reports."""
    was_on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    """Shapes equal, every output written (the tests poison outputs with NaN), relative error below ``tol``."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    bad = (~torch.isfinite(out)).sum().item()
    assert bad == 0, f"{bad} of {out.numel()} outputs not finite (unwritten, or read outside the kept prefix)"
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < tol, f"relative error {err:.3e} >= {tol:.0e}"
