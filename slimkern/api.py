"""``slimkern.load``: build a registered model and fill it from a checkpoint (or random weights)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import warnings
from collections.abc import Mapping

import torch

from .backends import select_backend
from .checkpoints import check_state_dict, read_checkpoint, unwrap_state_dict
from .model import SlimModel
from .plan import is_real_number
from .precision import parse_dtype, resolve_dtype
from .provenance import file_sha256
from .registry import ModelCfg, get_cfg
from .weights import pretrained_path, shipped_path

RANDOM_SEED = 0
RANDOM = object()  # weights="random": random weights on purpose


def load(name: str, weights: str | os.PathLike | Mapping | None = None, *, device: str | torch.device = "cpu",
         dtype: torch.dtype | str = torch.float32, backend: str = "auto", max_tokens: int | None = None,
         sha256: str | None = None, **arch_overrides) -> SlimModel:
    """Build the registered model ``name`` with one stored copy of its weights.

    Args:
        name: a name from :func:`slimkern.list_models` (e.g. ``"satmae"``).
        weights: path to the official checkpoint in its original container (``.pth``/``.pt``,
            read with ``torch.load(weights_only=True)``), a ``.safetensors`` file, or a state dict;
            ``"pretrained"``: the official file, downloaded once, verified against its pinned SHA-256 and
            cached (:mod:`slimkern.weights`); ``"random"``: deterministic random weights. ``None``: the
            weights that ship with slimkern for this model (``vit_tiny_eurosat``), else random weights with a
            warning (such outputs carry no pretrained meaning).
        device: where the weights live and the model runs.
        dtype: the floating dtype of the weights and the computation; ``"auto"`` picks bfloat16 on CPUs with
            native bfloat16 (AVX512-BF16, AMX) and on CUDA GPUs with it, float32 elsewhere
            (:func:`slimkern.precision.auto_dtype` says why). On a CPU, bfloat16 and float16 are first checked
            by probing every op the runtime uses against float64 (once per process, :mod:`slimkern.probes`).
        backend: ``"auto"`` (best available for the device) or ``"torch"``, ``"triton"``, ``"cuda"``.
        max_tokens: most tokens one input image may make (default: 8x the native input's; see
            :attr:`SlimModel.max_tokens`); larger images are refused before any work.
        sha256: with ``weights="pretrained"``, the official file's SHA-256 for models slimkern has none
            pinned for.
        **arch_overrides: fields of the family's architecture to replace (e.g. ``depth=2``), as
            timm's ``create_model(**kwargs)``; mainly for tests and small experiments. The model's named choices
            (``model.spec.choices``, where upstream implementations disagree) are set the same way, e.g.
            ``load("dofa_base", wavelength_table="esa")``, ``load("panopticon_vitb14", pos_resize="torchgeo")``.

    Raises:
        ValueError: unknown model or backend, a checkpoint with missing, unexpected or mis-shaped
            encoder keys (all listed), a file that is not a state dict.
        TypeError: ``dtype`` not a floating dtype, unknown architecture fields.
        ValueError: an architecture override out of range (``depth=0``, ``mlp_ratio=-1``, ...), an unknown device,
            ``"pretrained"`` without a pinned hash or with a download whose hash differs.
        OSError: ``"pretrained"`` could not be downloaded (and is not cached).
        DtypeCheckError (a ValueError): ``dtype`` computes wrongly on this CPU (the message names the ops and the
            workarounds).

    >>> model = slimkern.load("satmae", weights="fmow_pretrain.pth")    # doctest: +SKIP
    >>> model.run(x, width=0.1).shape                                    # doctest: +SKIP
    torch.Size([2, 1024])
    """
    cfg = _cfg_with(name, arch_overrides)
    parse_dtype(dtype)  # a bad dtype is a TypeError before anything else
    device = _device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but PyTorch sees no CUDA GPU; use device='cpu'")
    dtype = resolve_dtype(dtype, device).dtype  # "auto" resolved; a low-precision dtype probed on the CPU
    select_backend(backend, device, dtype)  # refuse an impossible backend before any work

    weights = _weights_source(cfg, weights, sha256, bool(arch_overrides))
    model: SlimModel = cfg.model_cls(cfg)
    if weights is RANDOM or weights is None:
        if weights is None:
            warnings.warn(f"slimkern.load({name!r}): no weights given, using deterministic random weights; outputs "
                          "carry no pretrained meaning (pass weights=PATH to an official checkpoint, 'pretrained' "
                          "to download it, or 'random' to say random weights are meant)", stacklevel=2)
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
    if max_tokens is not None:
        model.max_tokens = max_tokens
    return model.eval()


def _weights_source(cfg: ModelCfg, weights, sha256: str | None, overridden: bool):
    """What ``weights`` stands for: a file or state dict to read, :data:`RANDOM`, or ``None`` (random weights that
    nobody asked for: warned about). Shipped weights fit only the registered architecture, not overrides."""
    pretrained = isinstance(weights, str) and weights == "pretrained"
    if sha256 is not None and not pretrained:
        raise ValueError("sha256 verifies the download of weights='pretrained'; it does not apply to other weights")
    if isinstance(weights, str) and weights == "random":
        return RANDOM
    if pretrained:
        return pretrained_path(cfg, sha256)
    if weights is None and not overridden:
        return shipped_path(cfg)
    return weights


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
    arch = {**spec.arch_overrides(), **{k: _arch_value(name, k, getattr(cfg.arch, k), v)
                                        for k, v in overrides.items() if k in fields}}
    return dataclasses.replace(cfg, spec=spec, arch=dataclasses.replace(cfg.arch, **arch))


def _arch_value(name: str, field: str, registered: object, value: object) -> object:
    """An architecture override checked against the kind of the registered value: booleans stay booleans, sizes
    whole numbers >= 1 (>= 0 where the registered value is 0), ratios and epsilons positive finite numbers.
    numpy scalars become Python numbers; other kinds (tuples, dicts) are left to the family's own checks."""
    if isinstance(registered, bool):
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            raise TypeError(f"{name}: {field} must be True or False, got {value!r}")
        return bool(value)
    if isinstance(registered, int):
        low = min(1, registered)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: {field} must be a whole number >= {low}, got {value!r}")
        return int(value)
    if isinstance(registered, float):
        if not is_real_number(value) or not math.isfinite(value) or value < 0 or (value == 0 and registered > 0):
            kind = "positive" if registered > 0 else "non-negative"
            raise ValueError(f"{name}: {field} must be a {kind} finite number, got {value!r}")
        return float(value)
    return value


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
