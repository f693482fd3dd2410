"""Reading checkpoints safely and matching them to a model's encoder keys.

Checkpoints are untrusted input: ``.safetensors`` files are read with safetensors, everything
else with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping

import torch

from .registry import CheckpointFormat

_SHOW = 8  # how many offending keys an error message lists
# MAE-style training scripts (SatMAE, Scale-MAE, SSL4EO) save their argparse arguments beside the
# weights; a Namespace is a plain attribute bag, so it is allowed next to tensors and containers.
_SAFE_GLOBALS = [argparse.Namespace]
SAFETENSORS = "safetensors file"
TORCH = "PyTorch checkpoint (torch.save zip or legacy pickle)"
# torch names a refused import as "GLOBAL posix.system" in each of its message formats ("Unsupported global:
# GLOBAL x was not an allowed global", "Trying to load unsupported GLOBAL x whose module y is blocked")
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def _torch_load(path: str, mmap: bool):
    with torch.serialization.safe_globals(_SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _torch_reason(err: Exception) -> str:
    """What torch says went wrong, without its advice to load with ``weights_only=False`` (never safe here)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not re.search(r"weights_only|trusted source|Check the documentation", line)]
    return (useful or lines or [type(err).__name__])[0].removeprefix("WeightsUnpickler error: ")


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    """Read a checkpoint file into a (possibly nested) mapping of tensors, without running code.

    Every error names the file and the format tried (safetensors for ``.safetensors``, else torch.save's).
    """
    path = os.fspath(path)
    fmt = SAFETENSORS if path.endswith(".safetensors") else TORCH
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a directory, not a checkpoint file (expected a {fmt})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r} (a {fmt})")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"cannot read {path!r} as a {fmt}: the file is empty")
    obj = _read_safetensors(path) if fmt == SAFETENSORS else _read_torch(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, expected a state dict (a mapping of tensors)")
    return obj


def _read_safetensors(path: str) -> Mapping:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {path!r} as a {SAFETENSORS}: {err}") from None


def _read_torch(path: str) -> Mapping:
    try:
        try:
            return _torch_load(path, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return _torch_load(path, mmap=False)  # the legacy (pre-zip) format cannot be memory-mapped
    except pickle.UnpicklingError as err:
        blocked = _GLOBAL_IN_MESSAGE.findall(str(err)) or _unsafe_globals(path)
        if not blocked:
            raise CheckpointError(f"cannot read {path!r} as a {TORCH}: {_torch_reason(err)}") from None
        raise CheckpointError(
            f"refused to load {path!r}: unpickling it would import {', '.join(dict.fromkeys(blocked))}, i.e. run "
            "code beyond rebuilding tensors and plain containers, so torch.load(weights_only=True) stopped before "
            "running anything. Ask the publisher for a .safetensors file or a plain state dict of tensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path!r} as a {TORCH}: {_torch_reason(err)}") from None


def _unsafe_globals(path: str) -> list[str]:
    """The imports (``module.name``) of the file's pickles that torch's weights-only loader does not allow, read
    with pickletools, which only parses (for torch messages that name no global, e.g. "Unsupported operand")."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:  # a private helper: without it, anything outside torch counts
        allowed = set()
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _SAFE_GLOBALS}
    return [name for name in _pickled_globals(path) if name not in allowed and not name.startswith("torch.")]


def _pickled_globals(path: str) -> list[str]:
    names: list[str] = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                streams = [io.BytesIO(archive.read(n)) for n in archive.namelist() if n.endswith(".pkl")]
        else:
            with open(path, "rb") as file:
                streams = [io.BytesIO(file.read(64 << 20))]  # a legacy file: its pickles come before the tensor data
    except (OSError, zipfile.BadZipFile):
        return names
    for stream in streams:
        while True:  # a legacy file is several pickles in a row (magic number, protocol, ..., the state dict)
            strings: list[str] = []
            try:
                for opcode, arg, _ in pickletools.genops(stream):
                    if opcode.name in ("GLOBAL", "INST"):
                        names.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # the end of the pickles (tensor bytes, or a damaged file): what was read counts
                break
    return names


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
    # integer, boolean or complex weights would make the model integer (or drop imaginary parts) on conversion
    not_real = [f"{k} ({str(state[k].dtype).removeprefix('torch.')})"
                for k in expected if k in state and not state[k].is_floating_point()]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong),
                         ("tensors not real floating point", not_real)):
        if items:
            more = f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}")
    if problems:
        raise CheckpointError(f"{source} does not match the model's encoder:\n  " + "\n  ".join(problems))
