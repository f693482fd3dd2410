"""Backends: interchangeable implementations of the slimmed transformer blocks.

Each backend declares what it supports as data (devices, dtypes) plus an availability check, and
explains refusals in words. ``backend="auto"`` walks :data:`PRIORITY` and takes the first backend
with no reasons against it; a backend the user names is checked against the same reasons and
raises with them (as xformers' dispatch does).

Priority, and why: ``cuda`` (compiled, fewest launches) > ``triton`` (JIT kernels that read the
slimmed weights in place) > ``torch`` (plain PyTorch; always available, the CPU path).
"""

from __future__ import annotations

import torch

from ..blocks import Block
from ..plan import BlockPlan, SlimPlan


class Backend:
    """Base class: runs every transformer block of a slimmed encoder.

    Subclasses set the class attributes and implement :meth:`forward_block`.
    """

    name: str = ""
    devices: tuple[str, ...] = ()
    dtypes: tuple[torch.dtype, ...] = ()
    #: Norm-wise relative error vs the float64 reference that ``validate`` accepts, per dtype.
    tolerances: dict[torch.dtype, float] = {}

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run at all in this process (``None`` when it can)."""
        return None

    def not_supported_reasons(self, device: torch.device, dtype: torch.dtype) -> list[str]:
        """Readable reasons why this backend cannot run a model on ``device`` in ``dtype``."""
        reasons = []
        why = self.unavailable_reason()
        if why:
            reasons.append(why)
        if device.type not in self.devices:
            reasons.append(f"device {device.type!r} is not supported (supported: {', '.join(self.devices)})")
        if dtype not in self.dtypes:
            supported = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(f"dtype {dtype} is not supported (supported: {supported})")
        return reasons

    def forward_blocks(self, x: torch.Tensor, blocks: list[Block], plan: SlimPlan) -> torch.Tensor:
        """Run ``x`` ``[B, N, d]`` through every block at the widths of ``plan``."""
        for block, block_plan in zip(blocks, plan.blocks, strict=True):
            x = self.forward_block(x, block, block_plan)
        return x

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan) -> torch.Tensor:
        raise NotImplementedError


_BACKENDS: dict[str, Backend] = {}
PRIORITY = ("cuda", "triton", "torch")


def register_backend(backend: Backend) -> Backend:
    """Add a backend instance to the registry (its ``name`` must be in :data:`PRIORITY`)."""
    if backend.name not in PRIORITY:
        raise ValueError(f"backend name {backend.name!r} is not in the priority list {PRIORITY}")
    _BACKENDS[backend.name] = backend
    return backend


def list_backends() -> dict[str, str | None]:
    """Every known backend name -> ``None`` if usable in this process, else the reason it is not."""
    return {name: (_BACKENDS[name].unavailable_reason() if name in _BACKENDS else "not built") for name in PRIORITY}


def select_backend(requested: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """Resolve ``requested`` ("auto" or a backend name) for a model on ``device`` in ``dtype``."""
    if requested != "auto" and requested not in PRIORITY:
        raise ValueError(f"unknown backend {requested!r}; expected 'auto' or one of {', '.join(PRIORITY)}")
    names = PRIORITY if requested == "auto" else (requested,)
    refusals = []
    for name in names:
        backend = _BACKENDS.get(name)
        reasons = backend.not_supported_reasons(device, dtype) if backend else ["not part of this build yet"]
        if not reasons:
            return backend
        refusals.append(f"  {name}: " + "; ".join(reasons))
    raise NotImplementedError(
        f"no backend can run a {dtype} model on {device} (requested {requested!r}):\n" + "\n".join(refusals)
    )


from . import eager  # noqa: E402,F401  (registers the "torch" backend)
