"""The ``cuda`` backend and its CUDA C++ kernels (``csrc/``): width-sliced GEMMs, attention at any head dim,
LayerNorm. The checked ops (``attention``, ``layer_norm``, ``sliced_linear``, from :mod:`.ops`) register on first
access and load the compiled extension on first use (see :mod:`.build`); importing this package builds nothing.
"""

from __future__ import annotations

import importlib

from .backend import CudaBackend

_OPS = ("attention", "layer_norm", "sliced_linear")

__all__ = ["CudaBackend", *_OPS]


def __getattr__(name: str):
    if name in _OPS:
        return getattr(importlib.import_module(".ops", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
