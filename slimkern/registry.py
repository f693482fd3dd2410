"""The model registry: a frozen config record per model name, looked up by name or alias."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .spec import InputSpec


@dataclass(frozen=True)
class CheckpointFormat:
    """How a model's official checkpoint file is packed (named per model, never guessed from keys).

    Attributes:
        container_keys: keys under which the state dict sits in the official file (tried in order;
            a plain state dict is accepted as well).
        strip_prefixes: key prefixes removed before matching (``module.`` from DDP, ...).
        drop_prefixes: keys starting with these are not part of the encoder (decoder, mask token,
            classification head) and are dropped.
        sub_state_dicts: for files that are a dict of several state dicts (CROMA: one per encoder),
            their top-level names; they are merged into one state dict with keys ``<name>.<key>`` (a
            file without them is taken as an already merged state dict).
    """

    container_keys: tuple[str, ...] = ()
    sub_state_dicts: tuple[str, ...] = ()
    strip_prefixes: tuple[str, ...] = ("module.",)
    drop_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelCfg:
    """Everything slimkern knows about one registered model.

    ``arch`` is the family's architecture dataclass; ``model_cls`` builds the model from the cfg. ``spec`` is the
    checkpoint's input contract (bands, units, normalisation, sizes, each fact with its source).
    """

    name: str
    family: str
    model_cls: type
    arch: Any
    description: str
    spec: InputSpec
    pooled: str
    checkpoint: CheckpointFormat
    weights_url: str = ""
    license: str = ""
    paper: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def bands(self) -> tuple[str, ...]:
        """The spec's bands, in order."""
        return self.spec.bands

    @property
    def mean(self) -> tuple[float, ...]:
        """The spec's band means; zeros where the statistics come from the data (``normalize`` is then the identity)."""
        return self.spec.mean if self.spec.mean is not None else (0.0,) * len(self.bands)

    @property
    def std(self) -> tuple[float, ...]:
        return self.spec.std if self.spec.std is not None else (1.0,) * len(self.bands)


_MODELS: dict[str, ModelCfg] = {}


def register_model(cfg: ModelCfg) -> ModelCfg:
    """Register ``cfg`` under its name and aliases; a name may be registered only once."""
    for name in (cfg.name, *cfg.aliases):
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = cfg
    return cfg


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names and aliases matching a shell-style ``pattern``, sorted.

    >>> "satmae" in list_models("satmae*")
    True
    """
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def get_cfg(name: str) -> ModelCfg:
    """The config of ``name``; unknown names raise with the closest registered names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}"
        ) from None
