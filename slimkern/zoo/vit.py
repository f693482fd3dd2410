"""The plain ViT family (timm's ``VisionTransformer``): conv patch embedding, class token,
learned or stored absolute position embedding, pre-norm blocks, final norm.

Key names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.*``,
``norm.*``), which MAE-style checkpoints (SatMAE, SSL4EO, ...) use as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..blocks import BlockSpec
from ..flops import patch_embed_flops
from ..model import SlimModel
from ..registry import ModelCfg
from .pos_embed import resample_abs_pos_embed
from .stem import patch_embed


@dataclass(frozen=True)
class ViTArch:
    """Architecture of a plain ViT; ``load(name, **overrides)`` may replace any field."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    layer_scale: bool = False

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def block_spec(self) -> BlockSpec:
        return BlockSpec(dim=self.dim, num_heads=self.num_heads, head_dim=self.dim // self.num_heads,
                         mlp_hidden=int(self.dim * self.mlp_ratio), qkv_bias=self.qkv_bias,
                         norm_eps=self.norm_eps, layer_scale=self.layer_scale)


class ViT(SlimModel):
    """Plain ViT with a class token; other image sizes resample ``pos_embed`` bicubically (as MAE's
    ``interpolate_pos_embed`` does at fine-tuning time)."""

    def __init__(self, cfg: ModelCfg) -> None:
        arch: ViTArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        if arch.in_chans != len(cfg.bands):
            raise ValueError(f"{cfg.name}: in_chans={arch.in_chans} but the cfg lists {len(cfg.bands)} bands")
        meta = {"device": "meta"}
        self.cls_token = nn.Parameter(torch.empty(1, 1, arch.dim, **meta), requires_grad=False)
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + arch.grid**2, arch.dim, **meta), requires_grad=False)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Module()
        p, c = arch.patch_size, arch.in_chans
        self.patch_embed.proj.weight = nn.Parameter(torch.empty(arch.dim, c, p, p, **meta), requires_grad=False)
        self.patch_embed.proj.bias = nn.Parameter(torch.empty(arch.dim, **meta), requires_grad=False)

    def stem_flops(self, height: int, width: int) -> int:
        arch = self.cfg.arch
        patches = self.num_tokens(height, width) - self.num_prefix_tokens
        return patch_embed_flops(patches, arch.in_chans, arch.patch_size, arch.dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        dtype, proj = x.dtype, self.patch_embed.proj
        tokens, grid = patch_embed(x, proj.weight, proj.bias, self.cfg.arch.patch_size)
        pos = self.pos_embed.to(dtype)
        if tuple(grid) != (self.cfg.arch.grid,) * 2:
            pos = resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                         antialias=False)
        cls = (self.cls_token.to(dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        proj = self.patch_embed.proj
        fan_in = proj.weight[0].numel()
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * fan_in**-0.5)
        proj.bias.copy_(0.02 * torch.randn(proj.bias.shape, generator=generator))
        self.cls_token.copy_(0.02 * torch.randn(self.cls_token.shape, generator=generator))
        self.pos_embed.copy_(0.1 * torch.randn(self.pos_embed.shape, generator=generator))


def to_timm(model: ViT, state: dict | None = None, **kwargs) -> nn.Module:
    """The same network as a timm ``VisionTransformer`` at full width (for comparisons and export).

    ``state`` replaces the model's own state dict; ``kwargs`` go to the timm constructor.
    """
    from timm.models.vision_transformer import VisionTransformer

    arch = model.cfg.arch
    kwargs.setdefault("img_size", arch.img_size)
    vit = VisionTransformer(
        patch_size=arch.patch_size, in_chans=arch.in_chans, embed_dim=arch.dim, depth=arch.depth,
        num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=arch.norm_eps), num_classes=0, global_pool="token", **kwargs)
    vit.load_state_dict(model.state_dict() if state is None else state, strict=True)
    return vit.to(model.device, model.dtype).eval()
