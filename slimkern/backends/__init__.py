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
import torch.nn.functional as F
from torch import nn

from ..blocks import Block
from ..plan import BlockPlan, SlimPlan


class Backend:
    """Base class: runs every transformer block of a slimmed encoder.

    Subclasses set the class attributes and implement :meth:`forward_block`.
    """

    name: str = ""
    devices: tuple[str, ...] = ()
    #: Devices on which ``backend="auto"`` may pick this backend (default: all of ``devices``).
    auto_devices: tuple[str, ...] | None = None
    #: Dtypes for which ``backend="auto"`` may pick this backend (default: all of ``dtypes``).
    auto_dtypes: tuple[torch.dtype, ...] | None = None
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

    def forward_blocks(self, x: torch.Tensor, blocks: list[Block], plan: SlimPlan, *, bias: torch.Tensor | None = None,
                       context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``x`` ``[B, N, d]`` through every block at the widths of ``plan``.

        Args:
            bias: additive per-head attention-logit bias ``[H, N, N]`` of every self-attention (e.g. CROMA's 2-D
                ALiBi), in ``x.dtype``, broadcast over the batch. Slimming keeps every head, so it is used as is.
            context: ``[B, M, d]`` tokens the cross-attention sublayers read keys and values from (required when a
                block has ``spec.cross_attn``).
            context_bias: additive bias ``[H, N, M]`` of the cross-attention logits (only with ``context``).
        """
        check_attention_inputs(x, blocks, bias, context, context_bias)
        for block, block_plan in zip(blocks, plan.blocks, strict=True):
            x = self.forward_block(x, block, block_plan, bias=bias, context=context, context_bias=context_bias)
        return x

    def forward_block(self, x: torch.Tensor, block: Block, plan: BlockPlan, *, bias: torch.Tensor | None = None,
                      context: torch.Tensor | None = None, context_bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def layer_norm(self, x: torch.Tensor, norm: nn.Module, eps: float) -> torch.Tensor:
        """A (final) LayerNorm over the last dim with ``norm.weight`` / ``norm.bias``."""
        return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, eps)


def _check_bias(name: str, bias: torch.Tensor, shape: tuple[int, ...], x: torch.Tensor) -> None:
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {list(shape)}, got {type(bias).__name__}")
    if tuple(bias.shape) != shape:
        raise ValueError(f"{name} must have shape [H, Nq, Nk] = {list(shape)}, got {list(bias.shape)}")
    if bias.dtype != x.dtype:
        raise TypeError(f"{name} is {bias.dtype} but the tokens are {x.dtype}; build it in the tokens' dtype")
    if bias.device != x.device:
        raise ValueError(f"{name} is on {bias.device} but the tokens are on {x.device}")


def check_attention_inputs(x: torch.Tensor, blocks: list[Block], bias: torch.Tensor | None,
                           context: torch.Tensor | None, context_bias: torch.Tensor | None) -> None:
    """Raise a clear error for an attention bias or context that does not fit ``x`` and ``blocks``."""
    batch, tokens, dim = x.shape
    cross = any(block.spec.cross_attn for block in blocks)
    if cross and context is None:
        raise ValueError("blocks with cross-attention need a context [B, M, d] to attend to; got none")
    if context is not None:
        if not cross:
            raise ValueError("a context was given but no block has a cross-attention sublayer")
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"context must be a torch.Tensor [B, M, d], got {type(context).__name__}")
        if context.dim() != 3 or context.shape[0] != batch or context.shape[2] != dim:
            raise ValueError(f"context must be [B, M, d] = [{batch}, M, {dim}], got {list(context.shape)}")
        if context.dtype != x.dtype:
            raise TypeError(f"context is {context.dtype} but the tokens are {x.dtype}")
        if context.device != x.device:
            raise ValueError(f"context is on {context.device} but the tokens are on {x.device}")
    elif context_bias is not None:
        raise ValueError("context_bias was given without a context")
    for heads in sorted({block.spec.num_heads for block in blocks}):
        if bias is not None:
            _check_bias("bias", bias, (heads, tokens, tokens), x)
        if context_bias is not None:
            _check_bias("context_bias", context_bias, (heads, tokens, context.shape[1]), x)


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
        if backend and requested == "auto" and backend.auto_devices is not None \
                and device.type not in backend.auto_devices:
            reasons.append(f"not picked automatically on {device.type} (only on {', '.join(backend.auto_devices)})")
        if backend and requested == "auto" and backend.auto_dtypes is not None and dtype not in backend.auto_dtypes:
            reasons.append(f"not picked automatically for {dtype}")
        if not reasons:
            return backend
        refusals.append(f"  {name}: " + "; ".join(reasons))
    raise NotImplementedError(
        f"no backend can run a {dtype} model on {device} (requested {requested!r}):\n" + "\n".join(refusals)
    )


from . import cuda_backend, eager, triton_backend  # noqa: E402,F401  (register the backends)
