"""SoftCon (Wang et al., IEEE TGRS 2024): DINOv2 ViT-S/14 and ViT-B/14 pretrained on SSL4EO-S12 with
multi-label guided soft contrastive learning, for Sentinel-2 L1C (13 bands) and Sentinel-1 GRD (VV, VH).

Facts (MODELS.md section 7, read at ``zhu-xlab/softcon@b687e46c``; README re-read for this module): the
README builds ``models/dinov2/vision_transformer.py::vit_small|vit_base(img_size=224, patch_size=14,
in_chans=13|2, block_chunks=0, init_values=1e-5, num_register_tokens=0)`` -- the DINOv2 defaults
``interpolate_offset=0.1``, ``interpolate_antialias=False`` -- and loads the flat file strictly, so the file
holds ``mask_token`` as well; ``model(img)`` is the class token after the final norm. torchgeo's copies
(``*_enc.pth``) have the same keys without ``mask_token`` and load into timm ``vit_*_patch14_dinov2``.

Normalisation: torchgeo (``ViT{Small,Base}14_DINOv2_Weights.*_SOFTCON``) standardises raw values with the
SSL4EO-S12 statistics below; the SoftCon README instead recommends mapping each band to 8 bits with
``clip((x - (mean - 2 std)) / (4 std) * 255, 0, 255)``. slimkern follows torchgeo (a fixed mean/std).
"""

from __future__ import annotations

from ..bands import ESA_S2, S2_BANDS, SAR_NONE
from ..registry import ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .dinov2 import DINOV2_CHECKPOINT, DinoV2Arch, DinoV2ViT

# torchgeo models/resnet.py: _mean_s2/_std_s2 (SSL4EO-S12 L1C) and _mean_s1/_std_s1 (dB)
_S2_MEAN = (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0, 2195.2, 1537.4)
_S2_STD = (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5, 1340.0, 1142.9)
_S1_MEAN = (-12.59, -20.26)
_S1_STD = (5.26, 5.91)

_SIZES = {"s": {"dim": 384, "num_heads": 6}, "b": {"dim": 768, "num_heads": 12}}
_README = Source("readme", "https://github.com/zhu-xlab/softcon README (vit_small/vit_base(img_size=224, "
                           "patch_size=14, in_chans=13|2); SSL4EO-S12 L1C / S1 GRD)")
_TORCHGEO = Source("code", "torchgeo 0.8.1 torchgeo/models/resnet.py (_mean_s2/_std_s2, _mean_s1/_std_s1: the "
                           "standardisation of ViT{Small,Base}14_DINOv2_Weights.*_SOFTCON)")
_PAPER = Source("paper", "Wang et al., SoftCon, IEEE TGRS 2024 (arXiv:2405.20462): SSL4EO-S12, 10 m")


def _spec(sensor: str, bands: tuple[str, ...], unit: str, quantification: float, stats: tuple) -> InputSpec:
    return InputSpec(
        sensor=sensor, bands=bands, wavelengths=ESA_S2 if unit == "DN" else SAR_NONE, unit=unit,
        quantification=quantification, scale=1.0, offset=0.0, normalization="standardize", mean=stats[0],
        std=stats[1], image_size=224, patch_size=14, gsd_m=10.0, frames=1, pretraining_data="SSL4EO-S12",
        sources=cite(sensor=_README, bands=_README, units=_TORCHGEO, normalization=_TORCHGEO, image_size=_README,
                     patch_size=_README, gsd_m=_PAPER, frames=_PAPER, pretraining_data=_PAPER),
    )


# slimkern follows torchgeo's standardisation; the SoftCon README's 8-bit mapping clip((x - (mean - 2 std)) /
# (4 std) * 255) is not offered (whether it is then divided by 255 is not stated).
_SENSORS = {
    "s2": dict(prefix="B13", data="Sentinel-2 L1C, all 13 bands",
               spec=_spec("Sentinel-2 L1C", S2_BANDS, "DN", 10000.0, (_S2_MEAN, _S2_STD))),
    "s1": dict(prefix="B2", data="Sentinel-1 GRD, VV and VH",
               spec=_spec("Sentinel-1 GRD, backscatter in dB (10 log10 sigma0)", ("VV", "VH"), "dB", 1.0,
                          (_S1_MEAN, _S1_STD))),
}


def _register(size: str, sensor: str) -> None:
    s = _SENSORS[sensor]
    register_model(ModelCfg(
        name=f"softcon_vit{size}14_{sensor}",
        family="softcon",
        model_cls=DinoV2ViT,
        arch=DinoV2Arch(img_size=224, patch_size=14, in_chans=len(s["spec"].bands), depth=12, mlp_ratio=4.0,
                        qkv_bias=True, norm_eps=1e-6, layer_scale=True, interpolate_offset=0.1,
                        interpolate_antialias=False, **_SIZES[size]),
        description=f"SoftCon ViT-{size.upper()}/14 encoder (DINOv2 architecture), soft-contrastive pretrained on "
                    f"SSL4EO-S12 {s['data']}",
        spec=s["spec"],
        pooled="class token after the final norm (DINOv2 forward: x_norm_clstoken)",
        checkpoint=DINOV2_CHECKPOINT,
        weights_url=f"https://huggingface.co/wangyi111/softcon/resolve/main/{s['prefix']}_vit{size}14_softcon.pth",
        paper="Wang et al., Multi-Label Guided Soft Contrastive Learning for Efficient Earth Observation Pretraining, "
              "IEEE TGRS 2024 (arXiv:2405.20462)",
    ))


# softcon_vits14_s2, softcon_vitb14_s2, softcon_vits14_s1, softcon_vitb14_s1
_register("s", "s2")
_register("b", "s2")
_register("s", "s1")
_register("b", "s1")
