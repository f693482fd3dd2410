"""Scale-MAE (Reed et al., ICCV 2023): a ViT-L/16 whose position embedding is scaled by the ground
sample distance (GSD) of the input.

Facts from the official code, ``bair-climate-initiative/scale-mae@89280d83``:
``mae/models_mae.py`` (encoder of ``mae_vit_large_patch16``), ``mae/util/pos_embed.py``
(``get_2d_sincos_pos_embed_with_resolution``), ``mae/eval/knn.py``. The encoder is the SatMAE RGB
ViT-L, except that the stored ``pos_embed`` is never read: every forward computes the MAE 2-D sin-cos
at positions ``(column * res, row * res)`` for the grid of the actual input, per sample; the class
token gets the zero row. The kNN evaluation embeds an image as the class token after the final norm.
"""

from __future__ import annotations

from numbers import Real

import torch

from ..bands import RGB_BANDS, RGB_NOMINAL
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .pos_embed import sincos_2d
from .stem import patch_embed
from .vit import ViT, ViTArch


class ScaleMAE(ViT):
    """Scale-MAE encoder: a plain ViT with a GSD-scaled sin-cos position embedding computed per input.

    ``run(x, width, res=...)`` takes ``res``, Scale-MAE's ``input_res``: the GSD ratio that multiplies
    the patch positions, a positive number for the batch or a ``[B]`` tensor (one per image). It
    defaults to 1.0, as torchgeo's ``ScaleMAE(res=1.0)`` and TerraTorch (``default_input_res=1``); the
    official kNN evaluation uses ``res = 1.0 * 224 / S`` for images resized to ``S`` px (``--eval_gsd``).
    Any image size that is a multiple of 16 works; the official code builds square grids only
    (``int(num_patches ** 0.5)``), a non-square grid here encodes its own rows and columns.
    ``pos_embed`` is kept only because the checkpoints store it.
    """

    extra_inputs = ("res",)

    def _res(self, res: object, batch: int) -> torch.Tensor:
        """``res`` as a float64 ``[batch]`` CPU tensor (where the table is computed), or a clear error."""
        name = self.cfg.name
        if res is None:
            return torch.ones(batch, dtype=torch.float64)
        if isinstance(res, bool) or not isinstance(res, (Real, torch.Tensor)):
            raise TypeError(f"{name}: res must be a positive number or a [B] tensor of GSD ratios, "
                            f"got {type(res).__name__}")
        if isinstance(res, torch.Tensor):
            if res.dtype == torch.bool or res.is_complex():
                raise TypeError(f"{name}: res must be a real-valued tensor, got {res.dtype}")
            if res.dim() > 1 or (res.dim() == 1 and res.shape[0] != batch):
                raise ValueError(f"{name}: res must be a scalar or have one value per image ([{batch}]), "
                                 f"got shape {tuple(res.shape)}")
            values = res.detach().to(device="cpu", dtype=torch.float64).reshape(-1).expand(batch)
        else:
            values = torch.full((batch,), float(res), dtype=torch.float64)
        # value checks read the tensor, which a traced graph (torch.export / torch.compile) cannot branch on
        if torch.compiler.is_compiling():
            return values
        if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise ValueError(f"{name}: res must be finite and > 0 (the GSD ratio, 1.0 = the reference "
                             f"resolution), got {res}")
        return values

    def embed(self, x: torch.Tensor, res: float | torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        scale = self._res(res, x.shape[0])
        proj = self.patch_embed.proj
        tokens, (grid_h, grid_w) = patch_embed(x, proj.weight, proj.bias, self.cfg.arch.patch_size)
        # a [B, 1] scale gives B stacked tables of grid_h * grid_w rows each
        pos = sincos_2d(self.dim, grid_h, grid_w, scale=scale[:, None]).view(x.shape[0], -1, self.dim)
        cls = self.cls_token.to(dtype).expand(x.shape[0], -1, -1)  # its position row is zeros
        return torch.cat([cls, tokens + pos.to(x.device, dtype)], dim=1)


def _code(path: str) -> Source:
    return Source("code", f"bair-climate-initiative/scale-mae@89280d83 {path}")


_PAPER = Source("paper", "Reed et al., Scale-MAE, ICCV 2023 (arXiv:2212.14532)")
_CONFIG = Source("config", "bair-climate-initiative/scale-mae@89280d83 mae/config/fmow.yaml (ImageNet mean/std)")
_SPEC = InputSpec(
    sensor="8-bit RGB satellite images (fMoW-RGB, DigitalGlobe)", bands=RGB_BANDS, wavelengths=RGB_NOMINAL,
    unit="DN", quantification=255.0, scale=1 / 255, offset=0.0, normalization="standardize",
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), image_size=224, patch_size=16, gsd_m=None, frames=1,
    pretraining_data="fMoW-RGB",
    sources=cite(sensor=_PAPER, bands=_CONFIG, units=_CONFIG, normalization=_CONFIG,
                 image_size=_code("mae/models_vit.py (vit_large_patch16, 224 px)"),
                 patch_size=_code("mae/models_vit.py (vit_large_patch16)"),
                 gsd_m=Source("paper", "Reed et al., Scale-MAE (arXiv:2212.14532): GSD varies per image; run(res=...)"),
                 frames=_code("mae/models_mae.py (one image per sample)"), pretraining_data=_PAPER),
)

register_model(ModelCfg(
    name="scalemae_vitl",
    family="scalemae",
    model_cls=ScaleMAE,
    arch=ViTArch(img_size=224, patch_size=16, in_chans=3, dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                 qkv_bias=True, norm_eps=1e-6),
    description="Scale-MAE ViT-L/16 encoder, pretrained on fMoW-RGB (800 epochs), GSD-scaled position embedding",
    spec=_SPEC,
    pooled="class token after the final norm (the official kNN-evaluation convention)",
    checkpoint=CheckpointFormat(
        container_keys=("model",),
        strip_prefixes=("module.",),
        # decoder, mask tokens and the FPN/FCN reconstruction heads
        drop_prefixes=("mask_token", "mask_token_decoder", "decoder_embed", "decoder_pos_embed", "decoder_blocks",
                       "decoder_norm", "pos_emb_projection", "fpn.", "fcn.", "fcn_high.", "fcn_low."),
    ),
    weights_url="https://github.com/bair-climate-initiative/scale-mae/releases/download/base-800/"
                "scalemae-vitlarge-800.pth",
    paper="Reed et al., Scale-MAE: A Scale-Aware Masked Autoencoder for Multiscale Geospatial Representation "
          "Learning, ICCV 2023",
))
