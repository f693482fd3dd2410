"""Reading checkpoints safely and matching them to a model's encoder keys.

Checkpoints are untrusted input: ``.safetensors`` files are read with safetensors, everything
else with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping

import torch

from .registry import CheckpointFormat

_SHOW = 8  # how many offending keys an error message lists
# MAE-style training scripts (SatMAE, Scale-MAE, SSL4EO) save their argparse arguments beside the
# weights; a Namespace is a plain attribute bag, so it is allowed next to tensors and containers.
_SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def _torch_load(path: str, mmap: bool):
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    """Read a checkpoint file into a (possibly nested) mapping of tensors, without running code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        try:
            obj = _torch_load(path, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = _torch_load(path, mmap=False)  # the legacy (pre-zip) format cannot be memory-mapped
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"cannot read {path!r} as a PyTorch checkpoint: {_first_line(err)}") from None
        detail = next(line for line in str(err).splitlines() if "Unsupported global" in line).strip()
        raise CheckpointError(
            f"refused to load {path!r}: it contains Python objects other than tensors and plain containers, "
            f"which torch.load(weights_only=True) does not execute for safety ({detail}). If you trust the file, "
            "re-save just its state dict: torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth')"
        ) from None
    except RuntimeError as err:
        raise CheckpointError(f"cannot read {path!r} as a PyTorch checkpoint: {_first_line(err)}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, expected a state dict (a mapping of tensors)")
    return obj


def unwrap_state_dict(obj: Mapping, fmt: CheckpointFormat, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The encoder state dict inside ``obj``: container unwrapped, prefixes stripped, non-encoder keys dropped."""
    for key in fmt.container_keys:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if any(name in obj for name in fmt.sub_state_dicts):  # else: a plain (already merged) state dict
        missing = [name for name in fmt.sub_state_dicts if not isinstance(obj.get(name), Mapping)]
        if missing:
            raise CheckpointError(f"{source}: state dicts {missing} are missing (expected a dict of "
                                  f"{', '.join(fmt.sub_state_dicts)}; top-level keys: {sorted(obj)[:_SHOW]})")
        obj = {f"{name}.{key}": value for name in fmt.sub_state_dicts for key, value in obj[name].items()}
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            expected = f" (expected the weights under one of {list(fmt.container_keys)})" if fmt.container_keys else ""
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor{expected}; "
                f"top-level keys: {sorted(obj)[:_SHOW]}"
            )
        for prefix in fmt.strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if not (fmt.drop_prefixes and key.startswith(fmt.drop_prefixes)):
            state[key] = value
    return state


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], source: str) -> None:
    """Raise one error listing every missing key, unexpected key and shape mismatch."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {tuple(expected[k])})"
             for k in expected if k in state and state[k].shape != expected[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            more = f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}")
    if problems:
        raise CheckpointError(f"{source} does not match the model's encoder:\n  " + "\n  ".join(problems))
