"""The ``triton`` backend and its kernels: width-sliced GEMMs, reduced-head-dim attention, LayerNorm.

Importing this package does not import triton: the checked ops (``attention``, ``layer_norm``, ``sliced_linear``,
from :mod:`.ops`) load the kernels on first access. Set ``TRITON_INTERPRET=1`` before that to run the kernels on
CPU tensors.
"""

from __future__ import annotations

import importlib

from .backend import TritonBackend

_OPS = ("attention", "layer_norm", "sliced_linear")

__all__ = ["TritonBackend", *_OPS]


def __getattr__(name: str):
    if name in _OPS:  # the kernels import triton, so they load on first use
        return getattr(importlib.import_module(".ops", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
