"""The DINOv2 ViT family (``facebookresearch/dinov2`` ``models/vision_transformer.py::DinoVisionTransformer``):
conv patch embedding (patch 14), class token, learned absolute position embedding, pre-norm blocks with
LayerScale (``ls1.gamma``, ``ls2.gamma``), final norm. Used by SoftCon, the DINOv2 baseline and Panopticon.

Facts read in the official code (``dinov2/models/vision_transformer.py``, ``dinov2/hub/backbones.py``):
- ``prepare_tokens_with_masks`` concatenates the class token, then adds ``interpolate_pos_encoding(x, w, h)``;
  registers (none in the models here) would follow the class token.
- ``interpolate_pos_encoding`` returns the stored table when the patch count matches and the image is
  square; otherwise it resamples the stored ``M x M`` grid in float32 with ``F.interpolate(mode="bicubic",
  antialias=interpolate_antialias)``, passing ``scale_factor = (rows + offset) / M, (cols + offset) / M``
  when ``interpolate_offset`` is non-zero (the scale factor, not the size, then sets the sampling
  positions) and ``size = (rows, cols)`` otherwise.
- The hub models (``dinov2_vit{s,b,l,g}14``) use ``img_size=518``, ``interpolate_offset=0.1``,
  ``interpolate_antialias=False``; the register variants use offset 0 and antialias.
- ``mask_token`` (``[1, D]``) is a parameter of every checkpoint but is only used in training (iBOT masking).
- ``forward`` returns ``head(x_norm_clstoken)`` with ``head = Identity``: the class token after the final norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import CheckpointFormat, ModelCfg
from ..spec import Choice, Option, Source
from .vit import ViT, ViTArch

#: Official DINOv2-format files are flat state dicts; ``mask_token`` is training-only.
DINOV2_CHECKPOINT = CheckpointFormat(container_keys=(), strip_prefixes=("module.",), drop_prefixes=("mask_token",))


@dataclass(frozen=True)
class DinoV2Arch(ViTArch):
    """Architecture of a DINOv2-style ViT.

    ``img_size`` is the default input size (FLOP counts, docs); ``pos_embed_size`` the image size the
    stored ``pos_embed`` covers (0: the same as ``img_size``); DINOv2's own files hold 518 px tables.
    """

    patch_size: int = 14
    layer_scale: bool = True
    pos_embed_size: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pos_embed_size < 0 or self.pos_embed_size % self.patch_size:
            raise ValueError(f"pos_embed_size {self.pos_embed_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def pos_grid(self) -> int:
        """Side of the stored position-embedding grid."""
        return (self.pos_embed_size or self.img_size) // self.patch_size


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], offset: float = 0.1,
                          antialias: bool = False) -> torch.Tensor:
    """DINO/DINOv2 ``interpolate_pos_encoding``: the stored ``[1, 1 + M*M, D]`` table for a ``rows x cols`` grid.

    The class-token row is kept; computed in at least float32 (as the official code does) and returned in
    ``pos_embed.dtype``.
    """
    rows, cols = grid
    side = math.isqrt(pos_embed.shape[1] - 1)
    if side * side != pos_embed.shape[1] - 1:
        raise ValueError(f"pos_embed has {pos_embed.shape[1] - 1} patch rows, not a square grid")
    if rows == cols == side:  # the official early-out: same patch count and a square image
        return pos_embed
    dtype = pos_embed.dtype
    work = torch.promote_types(dtype, torch.float32)
    patch = pos_embed[:, 1:].to(work).reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if offset:
        size = {"scale_factor": ((rows + offset) / side, (cols + offset) / side)}
    else:
        size = {"size": (rows, cols)}
    patch = F.interpolate(patch, mode="bicubic", antialias=antialias, **size)
    if tuple(patch.shape[-2:]) != (rows, cols):
        raise ValueError(f"interpolate_offset {offset} gives a {tuple(patch.shape[-2:])} grid, expected {grid}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(dtype)
    return torch.cat([pos_embed[:, :1], patch], dim=1)


def pos_resize_choice(official: Source, other: str, other_source: Source) -> Choice:
    """``pos_resize``: how the stored position table reaches another grid. ``"official"``: DINOv2's run-time rule
    (scale factor ``(n + 0.1) / M``, no antialias); ``other``: resized by output size with antialias, as timm and
    torchgeo do (torchgeo once at load, to 224 px: the same table at that size)."""
    return Choice("pos_resize", "official", (
        Option("official", official, "run-time bicubic resize, interpolate_offset 0.1, no antialias",
               arch=(("interpolate_offset", 0.1), ("interpolate_antialias", False))),
        Option(other, other_source, "bicubic resize by output size with antialias",
               arch=(("interpolate_offset", 0.0), ("interpolate_antialias", True)))))


class DinoV2ViT(ViT):
    """A DINOv2 ``DinoVisionTransformer`` (MLP FFN, no registers) with timm key names, which the official
    files use as well. Other image sizes interpolate ``pos_embed`` at run time as the official code does."""

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__(cfg)
        arch: DinoV2Arch = cfg.arch
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + arch.pos_grid**2, arch.dim, device="meta"),
                                      requires_grad=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        arch, dtype = self.cfg.arch, x.dtype
        proj = self.patch_embed.proj
        tokens = F.conv2d(x, proj.weight.to(dtype), proj.bias.to(dtype), stride=arch.patch_size)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # row-major patches: token = r * W + c
        pos = interpolate_pos_embed(self.pos_embed, grid, arch.interpolate_offset, arch.interpolate_antialias)
        pos = pos.to(dtype)
        cls = self.cls_token.to(dtype).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + pos
