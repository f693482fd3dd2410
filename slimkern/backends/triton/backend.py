"""The ``triton`` backend: each block runs as Triton kernels that read the stored weights in place.

The data flow is :class:`~slimkern.backends.base.KernelBackend`'s: seven launches per block (two norms, four GEMMs
with fused epilogues, attention), plus the cross-attention sublayer's where a block has one. The kernels are the
custom ops of :mod:`.ops`, so ``torch.compile``, ``torch.export`` and CUDA-graph capture trace through them.

It runs on CUDA. On a CPU it runs only inside the Triton interpreter (``TRITON_INTERPRET=1`` set before triton is
imported), which is for tests: ``backend="auto"`` never picks it there.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ..base import KernelBackend


def _interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonBackend(KernelBackend):
    name = "triton"
    auto_devices = ("cuda",)
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    tolerances = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    op_tolerances = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
    ops_module = "slimkern.backends.triton.ops"

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if _interpreter() else ("cuda",)

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not _interpreter():
            return "no CUDA GPU (on a CPU the kernels run only in the Triton interpreter: TRITON_INTERPRET=1)"
        return None
