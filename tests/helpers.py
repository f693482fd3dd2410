"""Test utilities: tiny models of the real families, error measures, storage accounting."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import slimkern

#: Official checkpoint key names and shapes per model (see tests/data/README.md).
MODEL_SPECS = json.loads((Path(__file__).parent / "data" / "model_specs.json").read_text())

# A SatMAE-architecture ViT small enough for CPU tests but with the real token count (197) and
# head dim (64), so widths give d_k' = 1, 6, 21, 32, 64.
TINY = {"depth": 2, "dim": 128, "num_heads": 2}


def tiny_model(name: str = "satmae", **overrides) -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load(name, **{**TINY, **overrides})


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN anywhere gives NaN (which fails any ``<`` check)."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def tensor_storage_bytes(module: nn.Module) -> int:
    """Bytes of every distinct tensor storage reachable from ``module`` (params, buffers, attributes, caches)."""
    seen: dict[int, int] = {}

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple, set)):
            for value in obj:
                visit(value)

    for sub in module.modules():
        visit(vars(sub))
    return sum(seen.values())


class OpRecorder(TorchDispatchMode):
    """Names of the aten ops dispatched while active; with ``dtype``, only those given a tensor of that dtype."""

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.dtype = dtype
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.dtype is None or any(isinstance(t, torch.Tensor) and t.dtype == self.dtype
                                     for t in tree_leaves((args, kwargs))):
            self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
