"""SatMAE (Cong et al., NeurIPS 2022): MAE-pretrained ViTs on fMoW.

Facts from the official code, ``sustainlab-group/SatMAE@e31c11fa`` (MODELS.md section 1):
``models_mae.py::mae_vit_large_patch16_dec512d8b``; checkpoints are ``{'model': state_dict, ...}``
with decoder and mask-token keys beside the encoder; fMoW-RGB inputs are ``ToTensor`` (/255) then
normalised with the fMoW-RGB statistics below; the pre-training convention embeds an image as the
class token after the final norm.
"""

from __future__ import annotations

from ..registry import CheckpointFormat, ModelCfg, register_model
from .vit import ViT, ViTArch

_MAE_CHECKPOINT = CheckpointFormat(
    container_keys=("model",),
    strip_prefixes=("module.",),
    # MAE decoder and mask token; a fine-tuned file's classification head
    drop_prefixes=("mask_token", "decoder_", "head."),
)

register_model(ModelCfg(
    name="satmae_vitl_rgb",
    aliases=("satmae",),
    family="satmae",
    model_cls=ViT,
    arch=ViTArch(img_size=224, patch_size=16, in_chans=3, dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                 qkv_bias=True, norm_eps=1e-6),
    description="SatMAE ViT-L/16 encoder, MAE-pretrained on fMoW-RGB (800 epochs)",
    bands=("R", "G", "B"),
    mean=(0.4182007312774658, 0.4214799106121063, 0.3991275727748871),
    std=(0.28774282336235046, 0.27541765570640564, 0.2764017581939697),
    input_scale="8-bit RGB divided by 255 (values in [0, 1])",
    pooled="class token after the final norm (MAE pre-training convention)",
    checkpoint=_MAE_CHECKPOINT,
    weights_url="https://zenodo.org/record/7369797/files/fmow_pretrain.pth",
    paper="Cong et al., SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery, "
          "NeurIPS 2022",
))
