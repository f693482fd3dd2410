"""Tiny models of every zoo model class for export tests, registry-driven (a new class is covered once registered).

Head dim 48 and FFN 384, so the odd width 0.07 gives d_k' = 3 and d_h' = 26 (TerraMind's gated FFN: 17), neither a
multiple of 8; images of two patches per side; depth 1 (CROMA 2: radar and joint get depth // 2).
"""

from __future__ import annotations

import warnings

import slimkern
from slimkern.registry import get_cfg, list_models

TINY = {"depth": 1, "dim": 96, "num_heads": 2}
ARCH = {"satmae_vitl_ms": {"channel_embed": 32}, "satmae_vitb_ms": {"channel_embed": 32},
        "croma_base": {"depth": 2}, "croma_large": {"depth": 2},
        "panopticon_vitb14": {"attn_dim": 48, "channel_heads": 2}}
#: run() inputs a model cannot run without, given as export constants
CONSTANTS = {"panopticon_vitb14": {"wavelengths": [0.665, "VV", 0.49]}}
ODD_WIDTH = 0.07
#: One model per zoo family (cfg.family), the one with the most to export: graph inputs, band sets, cross-attention.
FAMILIES = ("satmae_vitb_ms", "scalemae_vitl", "prithvi_eo_v2_100_tl", "dofa_base", "copernicus_fm_base",
            "ssl4eo_vits16_moco", "softcon_vitb14_s1", "croma_base", "terramind_base", "panopticon_vitb14",
            "dinov2_vitb14", "vit_tiny_eurosat")


def other_classes() -> list[str]:
    """One name of each (family, model class) that :data:`FAMILIES` leaves out: the zoo's other forward passes."""
    seen = {(get_cfg(name).family, get_cfg(name).model_cls) for name in FAMILIES}
    names = []
    for name in sorted({get_cfg(n).name for n in list_models()}):
        cfg = get_cfg(name)
        if (cfg.family, cfg.model_cls) not in seen:
            seen.add((cfg.family, cfg.model_cls))
            names.append(name)
    return names


def tiny(name: str, **overrides) -> slimkern.SlimModel:
    arch = get_cfg(name).arch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load(name, **{**TINY, "img_size": 2 * arch.patch_size, **ARCH.get(name, {}), **overrides})
