"""The ``cuda`` backend: each block runs as compiled CUDA C++ kernels (``csrc/``) that read the stored weights in place.

The data flow is :class:`~slimkern.backends.base.KernelBackend`'s, the same as the ``triton`` backend's, with
fewer host overheads per launch; the kernels are the custom ops of :mod:`.ops`. bfloat16 and float16 run on the
kernels; float32 models run on the torch backend's ops (there are no fp32 kernels: :meth:`CudaBackend.fallbacks`
says so per op), and ``backend="auto"`` therefore picks this backend for bf16/fp16 only. Availability: a CUDA GPU,
the extension (built ahead of time, or JIT-built with nvcc on first use and cached), and a self-test of every op
against PyTorch on small inputs, once per device (:mod:`.self_test`); any failure is reported as the reason
(``list_backends()``, and the error of an explicit ``backend="cuda"``), and ``auto`` falls through to ``triton``.
"""

from __future__ import annotations

import torch

from ...blocks import Block
from ...plan import BlockPlan
from ..base import OPS, KernelBackend
from ..torch.backend import TorchBackend
from . import build
from .self_test import self_test


class CudaBackend(KernelBackend):
    name = "cuda"
    devices = ("cuda",)
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    auto_dtypes = (torch.bfloat16, torch.float16)  # float32 is the torch backend's ops: auto prefers triton there
    tolerances = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    op_tolerances = {torch.bfloat16: 1e-2, torch.float16: 1e-2}
    ops_module = "slimkern.backends.cuda.ops"

    def __init__(self) -> None:
        super().__init__()
        self._verdicts: dict[int, str | None] = {}
        self._fp32 = TorchBackend()

    def _verdict(self, index: int) -> str | None:
        """Self-test verdict for one GPU (cached); builds the extension on the first call (JIT, cached on disk)."""
        if index not in self._verdicts:
            try:
                build.extension()
            except build.ExtensionUnavailable as exc:
                return str(exc)
            self._verdicts[index] = self_test(torch.device("cuda", index))
        return self._verdicts[index]

    def unavailable_reason(self) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA GPU"
        index = torch.cuda.current_device()
        if index in self._verdicts:  # the common case, on every model.run(): no file-system lookups
            return self._verdicts[index]
        return build.unavailable_reason() or self._verdict(index)

    def fallbacks(self, dtype: torch.dtype) -> dict[str, str]:
        return dict.fromkeys(OPS, self._fp32.name) if dtype == torch.float32 else {}

    def not_supported_reasons(self, device: torch.device, dtype: torch.dtype) -> list[str]:
        reasons = super().not_supported_reasons(device, dtype)
        if not reasons and device.index is not None and device.index != torch.cuda.current_device():
            why = self._verdict(device.index)
            if why:
                reasons.append(why)
        return reasons

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype == torch.float32:  # no fp32 kernels: reported per op by fallbacks()
            return self._fp32.forward_block(x, block, plan, bias=bias, context=context, context_bias=context_bias)
        return super().forward_block(x, block, plan, bias=bias, context=context, context_bias=context_bias)
