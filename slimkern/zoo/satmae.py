"""SatMAE (Cong et al., NeurIPS 2022): MAE-pretrained ViTs on fMoW.

Facts from the official code, ``sustainlab-group/SatMAE@e31c11fa`` (MODELS.md sections 1 and 2):
``models_mae.py::mae_vit_large_patch16_dec512d8b`` (RGB) and ``models_mae_group_channels.py``
(multispectral, with ``models_vit_group_channels.py`` for fine-tuning); checkpoints are
``{'model': state_dict, ...}`` with decoder and mask-token keys beside the encoder; fMoW-RGB inputs
are ``ToTensor`` (/255) then normalised with the fMoW-RGB statistics below, fMoW-Sentinel inputs go
through ``SentinelNormalize`` (``util/datasets.py``); the pre-training convention embeds an image as
the class token after the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bands import ESA_S2, RGB_BANDS, RGB_NOMINAL
from ..flops import patch_embed_flops
from ..model import SlimModel
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .pos_embed import sincos_2d
from .vit import ViT, ViTArch

_MAE_CHECKPOINT = CheckpointFormat(
    container_keys=("model",),
    strip_prefixes=("module.",),
    # MAE decoder and mask token; a fine-tuned file's classification head
    drop_prefixes=("mask_token", "decoder_", "head."),
)


def _code(path: str) -> Source:
    return Source("code", f"sustainlab-group/SatMAE@e31c11fa {path}")


_PAPER = Source("paper", "Cong et al., SatMAE, NeurIPS 2022 (arXiv:2207.08051)")
_README = Source("readme", "https://github.com/sustainlab-group/SatMAE README (multi-spectral pretraining command: "
                           "--input_size 96 --patch_size 8 --dropped_bands 0 9 10)")
_FMOW_GSD = Source("docs", "https://github.com/fMoW/dataset (fMoW: each image's JSON metadata holds its own gsd)")
_RGB_SPEC = InputSpec(
    sensor="8-bit RGB satellite images (fMoW-RGB, DigitalGlobe)", bands=RGB_BANDS, wavelengths=RGB_NOMINAL,
    unit="DN", quantification=255.0, scale=1 / 255, offset=0.0, normalization="standardize",
    mean=(0.4182007312774658, 0.4214799106121063, 0.3991275727748871),
    std=(0.28774282336235046, 0.27541765570640564, 0.2764017581939697),
    image_size=224, patch_size=16, gsd_m=None, frames=1, pretraining_data="fMoW-RGB",
    sources=cite(sensor=_PAPER, bands=_code("util/datasets.py (CustomDatasetFromImages: RGB)"),
                 units=_code("util/datasets.py (ToTensor: / 255)"),
                 normalization=_code("util/datasets.py (Normalize with the fMoW-RGB mean/std)"),
                 image_size=_code("models_mae.py (mae_vit_large_patch16_dec512d8b: img_size 224)"),
                 patch_size=_code("models_mae.py (mae_vit_large_patch16_dec512d8b)"), gsd_m=_FMOW_GSD,
                 frames=_code("models_mae.py (2-D patch embedding, one image)"), pretraining_data=_PAPER),
)

register_model(ModelCfg(
    name="satmae_vitl_rgb",
    aliases=("satmae",),
    family="satmae",
    model_cls=ViT,
    arch=ViTArch(img_size=224, patch_size=16, in_chans=3, dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                 qkv_bias=True, norm_eps=1e-6),
    description="SatMAE ViT-L/16 encoder, MAE-pretrained on fMoW-RGB (800 epochs)",
    spec=_RGB_SPEC,
    pooled="class token after the final norm (MAE pre-training convention)",
    checkpoint=_MAE_CHECKPOINT,
    weights_url="https://zenodo.org/record/7369797/files/fmow_pretrain.pth",
    paper="Cong et al., SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery, "
          "NeurIPS 2022",
))


@dataclass(frozen=True)
class GroupChannelArch(ViTArch):
    """A SatMAE group-channel ViT: one patch embedding per band group (``channel_groups`` holds band
    indices into ``cfg.bands``), and a ``channel_embed``-dim group embedding beside the 2-D position one."""

    channel_groups: tuple[tuple[int, ...], ...] = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
    channel_embed: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.channel_groups or any(not group for group in self.channel_groups):
            raise ValueError(f"channel_groups must be non-empty groups of band indices, got {self.channel_groups}")
        bad = sorted({i for group in self.channel_groups for i in group if not 0 <= i < self.in_chans})
        if bad:
            raise ValueError(f"channel_groups {self.channel_groups} use band indices {bad} outside "
                             f"0..{self.in_chans - 1}")
        pos_dim = self.dim - self.channel_embed
        if self.channel_embed < 2 or self.channel_embed % 2 or pos_dim < 4 or pos_dim % 4:
            raise ValueError(f"channel_embed must be even and leave dim - channel_embed a positive multiple of 4 "
                             f"(sin-cos layouts); got dim {self.dim}, channel_embed {self.channel_embed}")


class GroupChannelViT(SlimModel):
    """SatMAE's multispectral "group channel" ViT (``models_mae_group_channels.py``).

    Group ``g`` embeds ``x[:, channel_groups[g]]`` (in the group's band order) with its own conv; the
    sequence is ``[cls, group 0 patches, group 1 patches, ...]``, each group's patches row-major. A
    patch token gets ``concat(pos_embed[r, c], channel_embed[g])``; the class token gets nothing (the
    pre-training encoder appends it bare; the fine-tuning model adds ``pos_embed[0]`` and a zero
    ``channel_cls_embed``, which is the same for the released files, whose ``pos_embed[0]`` is zeros).
    At another grid size the 2-D part is recomputed as MAE sin-cos: SatMAE's fine-tuning script drops
    a ``pos_embed`` of the wrong shape and keeps the model's freshly computed sin-cos table.
    """

    def __init__(self, cfg: ModelCfg) -> None:
        arch: GroupChannelArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        if arch.in_chans != len(cfg.bands):
            raise ValueError(f"{cfg.name}: in_chans={arch.in_chans} but the cfg lists {len(cfg.bands)} bands")
        meta = {"device": "meta"}
        p, groups = arch.patch_size, arch.channel_groups
        self.cls_token = nn.Parameter(torch.empty(1, 1, arch.dim, **meta), requires_grad=False)
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + arch.grid**2, arch.dim - arch.channel_embed, **meta),
                                      requires_grad=False)
        self.channel_embed = nn.Parameter(torch.empty(1, len(groups), arch.channel_embed, **meta),
                                          requires_grad=False)
        self.patch_embed = nn.ModuleList()
        for group in groups:
            embed = nn.Module()
            embed.proj = nn.Module()
            embed.proj.weight = nn.Parameter(torch.empty(arch.dim, len(group), p, p, **meta), requires_grad=False)
            embed.proj.bias = nn.Parameter(torch.empty(arch.dim, **meta), requires_grad=False)
            self.patch_embed.append(embed)

    def num_tokens(self, height: int, width: int) -> int:
        p, groups = self.cfg.arch.patch_size, self.cfg.arch.channel_groups
        return self.num_prefix_tokens + len(groups) * (height // p) * (width // p)

    def stem_flops(self, height: int, width: int) -> int:
        arch = self.cfg.arch
        patches = (height // arch.patch_size) * (width // arch.patch_size)
        return sum(patch_embed_flops(patches, len(group), arch.patch_size, arch.dim) for group in arch.channel_groups)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        arch, dtype = self.cfg.arch, x.dtype
        patches = []
        for group, patch_embed in zip(arch.channel_groups, self.patch_embed, strict=True):
            proj = patch_embed.proj
            tokens = F.conv2d(x[:, list(group)], proj.weight.to(dtype), proj.bias.to(dtype), stride=arch.patch_size)
            grid = tokens.shape[-2:]
            patches.append(tokens.flatten(2).transpose(1, 2))  # row-major patches: token = r * W + c
        if tuple(grid) == (arch.grid, arch.grid):
            pos = self.pos_embed[0, 1:].to(dtype)
        else:
            pos = sincos_2d(arch.dim - arch.channel_embed, *grid).to(x.device, dtype)
        groups, length = len(arch.channel_groups), pos.shape[0]
        chan = self.channel_embed[0].to(dtype)
        pos_chan = torch.cat([pos.expand(groups, -1, -1), chan[:, None].expand(-1, length, -1)], dim=-1)
        tokens = torch.cat(patches, dim=1) + pos_chan.reshape(1, groups * length, arch.dim)
        return torch.cat([self.cls_token.to(dtype).expand(x.shape[0], -1, -1), tokens], dim=1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """SatMAE's ``SentinelNormalize`` + ``ToTensor`` on raw Sentinel-2 digital numbers ``[B, 10, H, W]``.

        Per band, with the DN statistics ``cfg.mean``/``cfg.std``: ``v = clip((x - (mean - 2 std)) /
        (4 std) * 255, 0, 255)``, truncated to uint8 as the official ``astype(np.uint8)`` does, then
        ``/ 255`` -> ``[0, 1]``. Computed in float64; returns ``x.dtype`` (float32 for integer input).
        """
        self.check_tensor(x, check_dtype=False)
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{self.cfg.name}: normalize expects raw Sentinel-2 digital numbers (integer or "
                            f"floating tensor, reflectance x 10000), got {x.dtype}")
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.cfg.mean, dtype=torch.float64, device=x.device).view(shape)
        std = torch.tensor(self.cfg.std, dtype=torch.float64, device=x.device).view(shape)
        low, high = mean - 2 * std, mean + 2 * std
        v = ((x.double() - low) / (high - low) * 255.0).clamp(0, 255).floor() / 255.0
        return v.to(x.dtype if x.is_floating_point() else torch.float32)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        for patch_embed in self.patch_embed:
            proj = patch_embed.proj
            fan_in = proj.weight[0].numel()
            proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * fan_in**-0.5)
            proj.bias.copy_(0.02 * torch.randn(proj.bias.shape, generator=generator))
        self.cls_token.copy_(0.02 * torch.randn(self.cls_token.shape, generator=generator))
        self.pos_embed.copy_(0.1 * torch.randn(self.pos_embed.shape, generator=generator))
        self.channel_embed.copy_(0.1 * torch.randn(self.channel_embed.shape, generator=generator))


# fMoW-Sentinel DN statistics (util/datasets.py, SentinelIndividualImageDataset) of the 10 bands the
# group-channel models keep (``--dropped_bands 0 9 10`` removes B01, B09, B10 of the 13)
_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_S2_MEAN = (1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151, 1846.87040806,
            1762.59530783, 1972.62420416, 1732.16362238, 1247.91870117)
_S2_STD = (650.2842772, 712.12507725, 965.23119807, 948.9819932, 1108.06650639, 1258.36394548, 1233.1492281,
           1364.38688993, 1310.36996126, 1087.6020813)
_S2_PAPER = ("Cong et al., SatMAE: Pre-training Transformers for Temporal and Multi-Spectral Satellite Imagery, "
             "NeurIPS 2022")
_SENTINEL = _code("util/datasets.py (SentinelIndividualImageDataset, SentinelNormalize)")
_MS_SPEC = InputSpec(
    sensor="Sentinel-2 L1C (fMoW-Sentinel)", bands=_S2_BANDS, wavelengths=ESA_S2,
    unit="DN", quantification=10000.0, scale=1.0, offset=0.0, normalization="sentinel_normalize",
    mean=_S2_MEAN, std=_S2_STD, image_size=96, patch_size=8, gsd_m=10.0, frames=1,
    pretraining_data="fMoW-Sentinel",
    sources=cite(sensor=_PAPER, bands=_README, units=_SENTINEL, normalization=_SENTINEL, image_size=_README,
                 patch_size=_README, gsd_m=_PAPER,
                 frames=_code("models_mae_group_channels.py (one image per sample)"), pretraining_data=_PAPER),
)


def _register_ms(size: str, dim: int, depth: int, num_heads: int, file: str) -> None:
    register_model(ModelCfg(
        name=f"satmae_vit{size}_ms",
        family="satmae",
        model_cls=GroupChannelViT,
        arch=GroupChannelArch(img_size=96, patch_size=8, in_chans=10, dim=dim, depth=depth, num_heads=num_heads,
                              mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6,
                              channel_groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)), channel_embed=256),
        description=f"SatMAE ViT-{size.upper()}/8 group-channel encoder, MAE-pretrained on fMoW-Sentinel "
                    "(10 bands in 3 groups, 96 px)",
        spec=_MS_SPEC,
        pooled="class token after the final norm (MAE pre-training convention)",
        checkpoint=_MAE_CHECKPOINT,
        weights_url=f"https://zenodo.org/record/7338613/files/{file}",
        paper=_S2_PAPER,
    ))


_register_ms("l", 1024, 24, 16, "pretrain-vit-large-e199.pth")
_register_ms("b", 768, 12, 12, "pretrain-vit-base-e199.pth")
