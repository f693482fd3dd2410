"""Computer-vision baselines of the slimming paper: ImageNet MAE ViT-B/16 and DINOv2 ViT-B/14 (LVD-142M).

Facts read in timm 1.0.31 (``timm/models/vision_transformer.py``) and ``facebookresearch/dinov2``:

- ``vit_base_patch16_224.mae``: timm's ``vit_base_patch16_224`` (ViT-B/16, qkv bias, LayerNorm eps 1e-6)
  with ``num_classes=0`` and the default ``global_pool="token"``, ``fc_norm`` off: the pooled embedding
  is the class token after the final norm (MAE's fine-tuning recipe instead average-pools with a new
  ``fc_norm``, which is not part of the pretrained encoder). Weights ``mae_pretrain_vit_base.pth``,
  ``{'model': encoder state dict}``; timm's hub copy is a flat state dict with the same names.
- ``vit_base_patch14_dinov2.lvd142m``: timm's ViT-B/14 with LayerScale (``init_values``), built for 518 px
  (the 37 x 37 position table of the official ``dinov2_vitb14_pretrain.pth``), ``num_classes=0``, class
  token after the final norm. timm drops ``mask_token`` when loading.

Image size of the DINOv2 baseline: the stored table stays at 518 px and slimkern's default input is
224 px, the size the paper and the other models use. As the official DINOv2 code does, other sizes
interpolate the table at run time (bicubic, ``interpolate_offset=0.1``, no antialias, see
:mod:`slimkern.zoo.dinov2`). timm differs at other sizes: ``create_model(img_size=224)`` resamples the
table once at load and ``dynamic_img_size=True`` at run time, both by output size with antialias, which
gives slightly different position embeddings; at 518 px the two agree exactly.
"""

from __future__ import annotations

from ..bands import RGB_BANDS, RGB_NOMINAL
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .dinov2 import DINOV2_CHECKPOINT, DinoV2Arch, DinoV2ViT, pos_resize_choice
from .vit import ViT, ViTArch

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _spec(data: str, image_size: int, patch_size: int, stats: Source, arch: Source, paper: Source,
          choices: tuple = ()) -> InputSpec:
    """Natural 8-bit RGB photographs: /255, ImageNet statistics; no GSD."""
    return InputSpec(
        sensor="8-bit RGB photographs (not geospatial)", bands=RGB_BANDS, wavelengths=RGB_NOMINAL, unit="DN",
        quantification=255.0, scale=1 / 255, offset=0.0, normalization="standardize", mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD, image_size=image_size, patch_size=patch_size, gsd_m=None, frames=1, pretraining_data=data,
        sources=cite(sensor=paper, bands=stats, units=stats, normalization=stats, image_size=arch,
                     patch_size=arch, gsd_m=paper, frames=arch, pretraining_data=paper),
        choices=choices,
    )


_TIMM = Source("code", "timm 1.0.31 timm/models/vision_transformer.py (vit_base_patch16_224.mae pretrained_cfg: "
                       "ImageNet mean/std, 224 px, patch 16)")
_DINOV2 = Source("code", "facebookresearch/dinov2 dinov2/hub/backbones.py (img_size 518, patch 14, "
                         "interpolate_offset 0.1, no antialias) and dinov2/data/transforms.py (ImageNet mean/std)")
_TIMM_DINOV2 = Source("code", "timm 1.0.31 timm/models/vision_transformer.py (resample_abs_pos_embed: by output "
                              "size, antialias)")

register_model(ModelCfg(
    name="mae_vitb16",
    aliases=("vit_base_patch16_224.mae",),
    family="baselines",
    model_cls=ViT,
    arch=ViTArch(img_size=224, patch_size=16, in_chans=3, dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 qkv_bias=True, norm_eps=1e-6),
    description="MAE ViT-B/16 encoder, self-supervised on ImageNet-1k (computer-vision baseline)",
    spec=_spec("ImageNet-1k", 224, 16, _TIMM, _TIMM, Source("paper", "He et al., MAE, CVPR 2022 (arXiv:2111.06377)")),
    pooled="class token after the final norm (timm vit_base_patch16_224.mae: global_pool='token', no fc_norm)",
    checkpoint=CheckpointFormat(container_keys=("model",), strip_prefixes=("module.",),
                                drop_prefixes=("mask_token", "decoder_")),
    weights_url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
    license="cc-by-nc-4.0",
    paper="He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022",
))

register_model(ModelCfg(
    name="dinov2_vitb14",
    aliases=("vit_base_patch14_dinov2.lvd142m",),
    family="baselines",
    model_cls=DinoV2ViT,
    arch=DinoV2Arch(img_size=224, pos_embed_size=518, patch_size=14, in_chans=3, dim=768, depth=12, num_heads=12,
                    mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6, layer_scale=True, interpolate_offset=0.1,
                    interpolate_antialias=False),
    description="DINOv2 ViT-B/14 encoder, self-supervised on LVD-142M (computer-vision baseline); position table "
                "for 518 px, default input 224 px",
    spec=_spec("LVD-142M", 518, 14, _DINOV2, _DINOV2, Source("paper", "Oquab et al., DINOv2, TMLR 2024 "
                                                                     "(arXiv:2304.07193)"),
               (pos_resize_choice(_DINOV2, "timm", _TIMM_DINOV2),)),
    pooled="class token after the final norm (DINOv2 x_norm_clstoken; timm global_pool='token')",
    checkpoint=DINOV2_CHECKPOINT,
    weights_url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
    license="apache-2.0",
    paper="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, TMLR 2024",
))
