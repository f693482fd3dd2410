"""``slimkern.load``: build a registered model and fill it from a checkpoint (or random weights)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping

import torch

from .backends import select_backend
from .checkpoints import check_state_dict, read_checkpoint, unwrap_state_dict
from .model import SlimModel
from .provenance import file_sha256
from .registry import ModelCfg, get_cfg

RANDOM_SEED = 0


def load(name: str, weights: str | os.PathLike | Mapping | None = None, *, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, backend: str = "auto", **arch_overrides) -> SlimModel:
    """Build the registered model ``name`` with one stored copy of its weights.

    Args:
        name: a name from :func:`slimkern.list_models` (e.g. ``"satmae"``).
        weights: path to the official checkpoint in its original container (``.pth``/``.pt``,
            read with ``torch.load(weights_only=True)``), a ``.safetensors`` file, or a state dict.
            ``None`` builds deterministic random weights (with a warning: such outputs carry no
            pretrained meaning).
        device, dtype: where and in which floating dtype the weights live and the model runs.
        backend: ``"auto"`` (best available for the device) or ``"torch"``, ``"triton"``, ``"cuda"``.
        **arch_overrides: fields of the family's architecture to replace (e.g. ``depth=2``), as
            timm's ``create_model(**kwargs)``; mainly for tests and small experiments. The model's named choices
            (``model.spec.choices``, where upstream implementations disagree) are set the same way, e.g.
            ``load("dofa_base", wavelength_table="esa")``, ``load("panopticon_vitb14", pos_resize="torchgeo")``.

    Raises:
        ValueError: unknown model or backend, a checkpoint with missing, unexpected or mis-shaped
            encoder keys (all listed), a file that is not a state dict.
        TypeError: ``dtype`` not a floating dtype, unknown architecture fields.

    >>> model = slimkern.load("satmae", weights="fmow_pretrain.pth")    # doctest: +SKIP
    >>> model.run(x, width=0.1).shape                                    # doctest: +SKIP
    torch.Size([2, 1024])
    """
    cfg = _cfg_with(name, arch_overrides)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32, torch.bfloat16), got {dtype!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but PyTorch sees no CUDA GPU; use device='cpu'")
    select_backend(backend, device, dtype)  # refuse an impossible backend before any work

    model: SlimModel = cfg.model_cls(cfg)
    if weights is None:
        warnings.warn(f"slimkern.load({name!r}): no weights given, using deterministic random weights; "
                      "outputs carry no pretrained meaning (pass weights=PATH to an official checkpoint)",
                      stacklevel=2)
        model.to_empty(device="cpu")
        model.init_random(torch.Generator().manual_seed(RANDOM_SEED))
    else:
        source = "state dict" if isinstance(weights, Mapping) else f"checkpoint {os.fspath(weights)!r}"
        obj = weights if isinstance(weights, Mapping) else read_checkpoint(weights)
        if isinstance(weights, Mapping):
            model.checkpoint_name = "state dict (in memory)"
        else:  # hashed once, here: provenance records which file every embedding came from
            model.checkpoint_sha256 = file_sha256(weights)
            model.checkpoint_name = os.path.basename(os.fspath(weights))
        state = model.convert_checkpoint(unwrap_state_dict(obj, cfg.checkpoint, source))
        check_state_dict(state, {k: p.shape for k, p in model.named_parameters()}, f"{source} for {name!r}")
        model.load_state_dict(state, strict=True, assign=True)
    model.to(device=device, dtype=dtype)
    model.backend_name = backend
    return model.eval()


def build_meta(name: str, **arch_overrides) -> SlimModel:
    """The architecture of ``name`` on the meta device, without weights: for plans and FLOP counts."""
    cfg = _cfg_with(name, arch_overrides)
    return cfg.model_cls(cfg)


def _cfg_with(name: str, overrides: dict) -> ModelCfg:
    """The registered cfg of ``name`` with named choices set and architecture fields replaced (timm's
    ``create_model(**kwargs)``); an explicit architecture field wins over what a choice sets."""
    cfg = get_cfg(name)
    if not overrides:
        return cfg
    choices = {c.name for c in cfg.spec.choices}
    fields = {f.name for f in dataclasses.fields(cfg.arch)}
    unknown = sorted(set(overrides) - fields - choices)
    if unknown:
        raise TypeError(f"{name}: unknown architecture fields {unknown}; valid fields: {sorted(fields)}"
                        + (f"; named choices: {sorted(choices)}" if choices else ""))
    spec = cfg.spec.choose(**{k: v for k, v in overrides.items() if k in choices})
    arch = {**spec.arch_overrides(), **{k: v for k, v in overrides.items() if k in fields}}
    return dataclasses.replace(cfg, spec=spec, arch=dataclasses.replace(cfg.arch, **arch))
