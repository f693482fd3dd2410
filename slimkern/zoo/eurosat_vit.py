"""A small ViT trained by slimkern itself on EuroSAT RGB: the redundancy-analysis demo's default model.

No pretrained RS foundation-model weights can be downloaded where slimkern is developed, so that the
sweep demo measures a real, trained encoder, ``examples/train_eurosat_vit.py`` trains this ViT on a
fixed split of the 5,000-image EuroSAT RGB subset on the CPU; its weights ship in
``slimkern/data/weights/`` (provenance, split and accuracy in the README there). It is a plain
timm-style ViT (:mod:`slimkern.zoo.vit`): 64 px RGB input, patch 8 (64 patch tokens + class token),
dim 192, depth 6, 3 heads of 64 dims, FFN 768, pooled output = class token after the final norm.
"""

from __future__ import annotations

from pathlib import Path

from ..bands import RGB_BANDS, RGB_NOMINAL
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .vit import ViT, ViTArch

#: The shipped weights (fp16 safetensors, timm key names; load with ``slimkern.load(name, weights=...)``).
WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "weights" / "vit_tiny_eurosat.safetensors"

# Per-channel mean/std of the 5,000-image EuroSAT RGB subset (pixels / 255), rounded to 4 digits.
_EUROSAT_RGB_MEAN = (0.3444, 0.3811, 0.4085)
_EUROSAT_RGB_STD = (0.2014, 0.1360, 0.1154)

_TRAINING = Source("code", "examples/train_eurosat_vit.py and slimkern/data/weights/README.md (pixels / 255, the "
                           "5,000-image subset's channel statistics, 64 px, patch 8)")
_EUROSAT = Source("paper", "Helber et al., EuroSAT (arXiv:1709.00029): Sentinel-2 B04, B03, B02 as 8-bit RGB, 10 m")
_SPEC = InputSpec(
    sensor="Sentinel-2 true-colour composite as 8-bit RGB (EuroSAT RGB)", bands=RGB_BANDS, wavelengths=RGB_NOMINAL,
    unit="DN", quantification=255.0, scale=1 / 255, offset=0.0, normalization="standardize", mean=_EUROSAT_RGB_MEAN,
    std=_EUROSAT_RGB_STD, image_size=64, patch_size=8, gsd_m=10.0, frames=1, pretraining_data="EuroSAT RGB "
    "(supervised, 4,000 training images)",
    sources=cite(sensor=_EUROSAT, bands=_TRAINING, units=_TRAINING, normalization=_TRAINING, image_size=_TRAINING,
                 patch_size=_TRAINING, gsd_m=_EUROSAT, frames=_TRAINING, pretraining_data=_TRAINING),
)

register_model(ModelCfg(
    name="vit_tiny_eurosat",
    family="eurosat_vit",
    model_cls=ViT,
    arch=ViTArch(img_size=64, patch_size=8, in_chans=3, dim=192, depth=6, num_heads=3, mlp_ratio=4.0,
                 qkv_bias=True, norm_eps=1e-6),
    description="ViT (dim 192, depth 6, patch 8, 64 px) trained by slimkern on EuroSAT RGB on the CPU "
                "(the sweep demo's model; weights shipped in slimkern/data/weights)",
    spec=_SPEC,
    pooled="class token after the final norm (timm global_pool='token')",
    # The training script saves the encoder only; a file with the classifier head loads too (head dropped).
    checkpoint=CheckpointFormat(strip_prefixes=("module.",), drop_prefixes=("head.",)),
    weights_url=f"shipped with slimkern: {WEIGHTS.relative_to(WEIGHTS.parents[3])}",
    license="apache-2.0 (weights); trained on EuroSAT, MIT",
    paper="trained for slimkern's redundancy analysis (examples/train_eurosat_vit.py)",
))
