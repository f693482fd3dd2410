"""SSL4EO-S12 (Wang et al., IEEE GRSM 2023): ViT-S/16 encoders pretrained on Sentinel-2 L1C (13 bands) with
MoCo-v3, DINO and MAE.

Facts from the official code, ``zhu-xlab/SSL4EO-S12`` (MODELS.md section 8 at ``2156913c``; re-read for this
module at ``1dc0c831``: ``transfer_classification/models/moco_v3/vits.py``, ``linear_BE_dino.py``,
``models/dino/utils.py``):

- All three are timm-named ViT-S/16 (384 wide, 12 blocks, 6 heads, qkv bias, LayerNorm eps 1e-6) with
  ``in_chans=13``; inputs are L1C digital numbers divided by 10000.
- MoCo-v3 (``VisionTransformerMoCo.build_2d_sincos_position_embedding``): a fixed sin-cos table computed
  for the model's grid and stored; ``meshgrid(grid_w, grid_h)`` with ``ij`` indexing makes the slow
  (row) index fill the first half: ``[sin(r w), cos(r w), sin(c w), cos(c w)]``; zero class row. The
  full checkpoint is ``{'state_dict': {'module.base_encoder.*', 'module.momentum_encoder.*',
  'module.predictor.*'}, ...}``; the encoder is ``base_encoder`` without its ``head.*`` (projection MLP).
- DINO: a learned table; ``linear_BE_dino.py`` loads ``checkpoint_key="teacher"`` by default and
  ``utils.load_pretrained_weights`` strips ``module.`` then ``backbone.``; ``head.*`` is the DINO head.
  Other sizes use DINO's ``interpolate_pos_encoding`` (bicubic, scale factor ``(n + 0.1) / M``).
- MAE: MAE's column-first sin-cos table, stored; the full checkpoint is ``{'model': ...}`` with the
  decoder and ``mask_token``. Other sizes: bicubic resampling of the stored table (MAE's
  ``interpolate_pos_embed``).
- torchgeo re-packages the encoders as flat timm state dicts (``ViTSmall16_Weights.SENTINEL2_ALL_*``) and
  loads them with ``strict=False``, tolerating missing ``norm.*``/``head.*``.

Every method embeds an image as the class token after the final norm (the encoder's own ``forward``;
DINO's linear-probe script concatenates the normed class tokens of the last 4 blocks instead).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from ..bands import ESA_S2, S2_BANDS
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .dinov2 import interpolate_pos_embed
from .pos_embed import sincos_1d, sincos_2d
from .vit import ViT, ViTArch

#: Sentinel-2 L1C, all 13 bands in the SSL4EO-S12 order.
S2_L1C_BANDS = S2_BANDS


class SSL4EOViT(ViT):
    """A timm ViT whose position table at other grid sizes comes from :meth:`position_embedding`.

    A checkpoint without the final norm (``norm.*``) gets an identity-affine final LayerNorm (weight 1,
    bias 0) with a warning: the network torchgeo builds for such a file (timm init, ``strict=False``).
    """

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, 1 + rows * cols, D]`` position table for a ``rows x cols`` patch grid."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        dtype, p = x.dtype, self.cfg.arch.patch_size
        proj = self.patch_embed.proj
        tokens = F.conv2d(x, proj.weight.to(dtype), proj.bias.to(dtype), stride=p)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # row-major patches: token = r * W + c
        pos = self.pos_embed if grid == (self.cfg.arch.grid,) * 2 else self.position_embedding(grid)
        pos = pos.to(dtype)
        cls = (self.cls_token.to(dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1)

    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "norm.weight" in state or "norm.bias" in state:
            return state
        warnings.warn(f"{self.cfg.name}: the checkpoint has no final norm (norm.weight, norm.bias); using an "
                      "identity-affine LayerNorm (weight 1, bias 0), as torchgeo does for such files", stacklevel=3)
        return dict(state, **{"norm.weight": torch.ones(self.dim), "norm.bias": torch.zeros(self.dim)})


class MoCoViT(SSL4EOViT):
    """MoCo-v3 ViT: fixed row-first sin-cos positions, recomputed for other grids as the model builds them
    (a non-square grid keeps rows in the first half and columns in the second)."""

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        half = self.dim // 2
        table = torch.cat([sincos_1d(half, rows.reshape(-1)), sincos_1d(half, cols.reshape(-1))], dim=1)
        return torch.cat([torch.zeros(1, self.dim, dtype=table.dtype), table]).unsqueeze(0)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        super().init_stem_random(generator)
        self.pos_embed.copy_(self.position_embedding((self.cfg.arch.grid,) * 2))


class DinoViT(SSL4EOViT):
    """DINO ViT: learned positions, interpolated for other grids as DINO's ``interpolate_pos_encoding``."""

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, grid, offset=0.1, antialias=False)


class MAEViT(SSL4EOViT):
    """MAE ViT: stored sin-cos positions, resampled bicubically for other grids (MAE ``interpolate_pos_embed``)."""

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        return resample_abs_pos_embed(self.pos_embed, list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                      antialias=False)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        super().init_stem_random(generator)
        grid = self.cfg.arch.grid
        self.pos_embed[0, 0].zero_()
        self.pos_embed[0, 1:].copy_(sincos_2d(self.dim, grid, grid))


_ARCH = ViTArch(img_size=224, patch_size=16, in_chans=13, dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
                qkv_bias=True, norm_eps=1e-6)
_TORCHGEO_HF = "https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_{0}/resolve/{1}/" \
               "vit_small_patch16_224_sentinel2_all_{0}-{2}.pth"
_METHODS = {
    "moco": dict(
        model_cls=MoCoViT, title="MoCo-v3",
        checkpoint=CheckpointFormat(container_keys=("state_dict",), strip_prefixes=("module.", "base_encoder."),
                                    drop_prefixes=("momentum_encoder.", "predictor.", "head.")),
        weights_url=_TORCHGEO_HF.format("moco", "1cb683f6c14739634cdfaaceb076529adf898c74", "67c9032d"),
        positions="fixed row-first sin-cos"),
    "dino": dict(
        model_cls=DinoViT, title="DINO",
        checkpoint=CheckpointFormat(container_keys=("teacher",), strip_prefixes=("module.", "backbone."),
                                    drop_prefixes=("head.",)),
        weights_url=_TORCHGEO_HF.format("dino", "5b41dd418a79de47ac9f5be3e035405a83818a62", "36bcc127"),
        positions="learned"),
    "mae": dict(
        model_cls=MAEViT, title="MAE",
        checkpoint=CheckpointFormat(container_keys=("model",), strip_prefixes=("module.",),
                                    drop_prefixes=("mask_token", "decoder_", "head.")),
        weights_url="https://huggingface.co/wangyi111/SSL4EO-S12/resolve/75c72195d35201dc1fb210818993518c25da566b/"
                    "B13_vits16_mae_ep99_enc.pth",
        positions="fixed column-first (MAE) sin-cos"),
}


_README = Source("readme", "https://github.com/zhu-xlab/SSL4EO-S12 README (13 L1C bands; input clipped to [0, 1] "
                           "by dividing 10000)")
_PAPER = Source("paper", "Wang et al., SSL4EO-S12 (arXiv:2211.07044): Sentinel-1/2 patches of 264 px at 10 m")
_SPEC = InputSpec(
    sensor="Sentinel-2 L1C", bands=S2_L1C_BANDS, wavelengths=ESA_S2, unit="DN", quantification=10000.0,
    scale=1e-4, offset=0.0, normalization="standardize", mean=(0.0,) * 13, std=(1.0,) * 13, image_size=224,
    patch_size=16, gsd_m=10.0, frames=1, pretraining_data="SSL4EO-S12",
    sources=cite(sensor=_README, bands=_README, units=_README,
                 normalization=Source("code", "torchgeo 0.8.1 torchgeo/models/vit.py (ViTSmall16_Weights.SENTINEL2_"
                                              "ALL_*: Resize 256, CenterCrop 224, / 10000, nothing else)"),
                 image_size=Source("code", "zhu-xlab/SSL4EO-S12@2156913c src/benchmark/pretrain_ssl/models/moco_v3/"
                                           "vits.py (vit_small, 224 px)"),
                 patch_size=Source("code", "zhu-xlab/SSL4EO-S12@2156913c src/benchmark/pretrain_ssl/models/moco_v3/"
                                           "vits.py (patch 16)"),
                 gsd_m=_PAPER, frames=_PAPER, pretraining_data=_PAPER),
)


def _register(method: str) -> None:
    m = _METHODS[method]
    register_model(ModelCfg(
        name=f"ssl4eo_vits16_{method}",
        aliases=(f"ssl4eo_s12_vits16_{method}",),
        family="ssl4eo",
        model_cls=m["model_cls"],
        arch=_ARCH,
        description=f"SSL4EO-S12 ViT-S/16 encoder, {m['title']}-pretrained on Sentinel-2 L1C (13 bands), "
                    f"{m['positions']} position embedding",
        spec=_SPEC,
        pooled="class token after the final norm",
        checkpoint=m["checkpoint"],
        weights_url=m["weights_url"],
        paper="Wang et al., SSL4EO-S12: A Large-Scale Multi-Modal, Multi-Temporal Dataset for Self-Supervised "
              "Learning in Earth Observation, IEEE GRSM 2023 (arXiv:2211.07044)",
    ))


_register("moco")
_register("dino")
_register("mae")
