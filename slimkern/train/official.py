"""Writing trained weights back into the model's OFFICIAL checkpoint file layout.

The output has the input file's container, keys, shapes and dtypes (e.g. ``{'model': state_dict}`` with
the decoder and optimizer entries of an MAE file, or a flat safetensors file): only the encoder tensors
are replaced. Loading goes ``file -> unwrap_state_dict -> convert_checkpoint -> model``; slimkern's
readers pass the file's tensor objects through where a key is only renamed, so the tensor objects tell
which file entry each model parameter came from, for every family, with no inverse renaming to maintain.
A parameter that the file does not hold (a buffer the converter fills in, such as an identity final norm)
has no place to go: :func:`official_locations` reports it and the trainer keeps it frozen.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ..checkpoints import read_checkpoint, unwrap_state_dict
from ..model import SlimModel

Location = tuple  # the keys from the file's top level down to one tensor


def _tensors(obj: Mapping, path: Location = ()) -> Iterator[tuple[Location, torch.Tensor]]:
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            yield (*path, key), value
        elif isinstance(value, Mapping):
            yield from _tensors(value, (*path, key))


def official_locations(model: SlimModel, raw: Mapping) -> tuple[dict[str, list[Location]], list[str]]:
    """``({parameter name: its locations in the raw checkpoint}, [parameters the file does not hold])``."""
    with warnings.catch_warnings():  # the conversion's notes were shown when the model was loaded
        warnings.simplefilter("ignore")
        state = model.convert_checkpoint(unwrap_state_dict(raw, model.cfg.checkpoint))
    where: dict[int, list[Location]] = {}
    for location, tensor in _tensors(raw):
        where.setdefault(id(tensor), []).append(location)
    found, missing = {}, []
    for name, _ in model.named_parameters():
        tensor = state.get(name)
        if tensor is not None and id(tensor) in where:
            found[name] = where[id(tensor)]
        else:
            missing.append(name)
    return found, missing


def _replace(obj: Mapping, updates: dict[Location, torch.Tensor], path: Location = ()) -> dict:
    out = {}
    for key, value in obj.items():
        here = (*path, key)
        if here in updates:
            out[key] = updates[here]
        elif isinstance(value, Mapping):
            out[key] = _replace(value, updates, here)
        else:
            out[key] = value
    return out


def write_official(model: SlimModel, source: str | os.PathLike, out: str | os.PathLike,
                   metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s weights into a copy of the checkpoint ``source`` (same container, keys, shapes and
    dtypes; other entries unchanged) at ``out`` (safetensors if ``source`` is, else ``torch.save``).

    ``metadata`` is added to a safetensors file's metadata (other formats have none). Returns ``out``.
    """
    source, out = Path(source), Path(out)
    raw = read_checkpoint(source)
    locations, _ = official_locations(model, raw)
    params = model.state_dict()  # the official layout (attention weights permuted back)
    originals = dict(_tensors(raw))
    updates = {}
    for name, places in locations.items():
        for place in places:
            original = originals[place]
            updates[place] = params[name].detach().to("cpu", original.dtype).reshape(original.shape).contiguous()
    new = _replace(raw, updates)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if source.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(source), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        save_file({k: v.contiguous() for k, v in new.items()}, str(tmp), metadata={**meta, **(metadata or {})})
    else:
        torch.save(new, tmp)
    os.replace(tmp, out)
    return out
