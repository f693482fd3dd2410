"""The model registry: a frozen config record per model name, looked up by name or alias.

A family module of :mod:`slimkern.zoo` registers its models when it is imported, and :data:`ZOO` says which module
registers which names: ``import slimkern`` imports no family (nor timm), :func:`list_models` answers from the table,
and :func:`get_cfg` imports a family the first time one of its models is looked up.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
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
    checkpoint's input contract (bands, units, normalisation, sizes, each fact with its source). ``weights_url`` is
    the official weight file, ``weights_sha256`` its pinned hash (see :mod:`slimkern.weights`).
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
    weights_sha256: str = ""  # of the file at weights_url: weights="pretrained" downloads only with it pinned
    shipped_weights: str = ""  # weight file inside the package (relative to slimkern/): loaded by default
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

#: Family module of :mod:`slimkern.zoo` -> the names and aliases it registers (tests/test_registry.py checks it
#: against the modules).
ZOO: dict[str, tuple[str, ...]] = {
    "baselines": ("dinov2_vitb14", "mae_vitb16", "vit_base_patch14_dinov2.lvd142m", "vit_base_patch16_224.mae"),
    "copernicus_fm": ("copernicus_fm_base", "copernicusfm_base"),
    "croma": ("croma_base", "croma_large"),
    "dofa": ("dofa_base", "dofa_base_patch16_224", "dofa_large", "dofa_large_patch16_224", "dofa_v2_base",
             "dofa_v2_large"),
    "eurosat_vit": ("vit_tiny_eurosat",),
    "panopticon": ("panopticon_vitb14",),
    "prithvi": ("prithvi_eo_v1_100", "prithvi_eo_v1_100m", "prithvi_eo_v2_100_tl", "prithvi_eo_v2_100m_tl",
                "prithvi_eo_v2_300", "prithvi_eo_v2_300_tl", "prithvi_eo_v2_300m", "prithvi_eo_v2_300m_tl",
                "prithvi_eo_v2_600", "prithvi_eo_v2_600_tl", "prithvi_eo_v2_600m", "prithvi_eo_v2_600m_tl"),
    "satmae": ("satmae", "satmae_vitb_ms", "satmae_vitl_ms", "satmae_vitl_rgb"),
    "scalemae": ("scalemae_vitl",),
    "softcon": ("softcon_vitb14_s1", "softcon_vitb14_s2", "softcon_vits14_s1", "softcon_vits14_s2"),
    "ssl4eo": ("ssl4eo_s12_vits16_dino", "ssl4eo_s12_vits16_mae", "ssl4eo_s12_vits16_moco", "ssl4eo_vits16_dino",
               "ssl4eo_vits16_mae", "ssl4eo_vits16_moco"),
    "terramind": ("terramind_base", "terramind_large", "terramind_v1_base", "terramind_v1_large"),
}
_FAMILY_OF = {name: module for module, names in ZOO.items() for name in names}


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
    return sorted(name for name in {*_MODELS, *_FAMILY_OF} if fnmatch.fnmatch(name, pattern))


def get_cfg(name: str) -> ModelCfg:
    """The config of ``name``; unknown names raise with the closest registered names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS and name in _FAMILY_OF:
        importlib.import_module(f"slimkern.zoo.{_FAMILY_OF[name]}")  # registers the family's models
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}"
        ) from None
