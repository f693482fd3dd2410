"""The backend registry: which backends exist, in which order ``backend="auto"`` tries them, and why one is refused.

Each backend declares what it supports as data (devices, dtypes) plus an availability check, and explains refusals
in words. ``backend="auto"`` walks :data:`PRIORITY` and takes the first backend with no reasons against it; a
backend the user names is checked against the same reasons and raises with them (as xformers' dispatch does).

Priority, and why: ``cuda`` (compiled, fewest launches) > ``triton`` (JIT kernels that read the slimmed weights in
place) > ``torch`` (plain PyTorch; always available, the CPU path).
"""

from __future__ import annotations

import torch

from .base import Backend

PRIORITY = ("cuda", "triton", "torch")
_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend instance to the registry (its ``name`` must be in :data:`PRIORITY`)."""
    if backend.name not in PRIORITY:
        raise ValueError(f"backend name {backend.name!r} is not in the priority list {PRIORITY}")
    _BACKENDS[backend.name] = backend
    return backend


def list_backends() -> dict[str, str | None]:
    """Every known backend name -> ``None`` if usable in this process, else the reason it is not."""
    return {name: (_BACKENDS[name].unavailable_reason() if name in _BACKENDS else "not built") for name in PRIORITY}


def describe_backends() -> dict[str, str]:
    """Every known backend name -> one line: ``available`` or the reason it is not, then the ops it hands to
    another backend's implementation, per dtype (a backend never claims an op it does not run itself)."""
    lines = {}
    for name, why in list_backends().items():
        line = "available" if why is None else why
        backend = _BACKENDS.get(name)
        for dtype in backend.dtypes if backend else ():
            fallbacks = backend.fallbacks(dtype)
            for runner in sorted(set(fallbacks.values())):
                ops = [op for op, by in fallbacks.items() if by == runner]
                line += f"; {str(dtype).removeprefix('torch.')}: {', '.join(ops)} run as the {runner} backend's ops"
        lines[name] = line
    return lines


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


def _register_builtin() -> None:
    # each backend's module imports only torch at import time: kernels, triton and the extension load on first use
    from .cuda.backend import CudaBackend
    from .torch.backend import TorchBackend
    from .triton.backend import TritonBackend

    for backend in (CudaBackend(), TritonBackend(), TorchBackend()):
        register_backend(backend)


_register_builtin()
