"""Shared by the DOFA and Copernicus-FM tests: image-like inputs, the official DOFA key layout, and torchgeo's
DOFA and Copernicus-FM modules as independent reference implementations.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from tests.zoo._torchgeo import torchgeo_models


def torchgeo_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """``(torchgeo.models.dofa, torchgeo.models.copernicusfm)``; skips the test without torchgeo."""
    torchgeo_models()
    from torchgeo.models import copernicusfm, dofa

    return dofa, copernicusfm


def image_like(batch: int, bands: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Smooth fields plus texture (a randomly initialised DOFA barely separates white-noise inputs)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, bands, 7, 7, generator=gen)
    smooth = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return smooth + 0.3 * torch.randn(batch, bands, size, size, generator=gen)


def official_shapes(dim: int, depth: int, version: int = 1, planes: int = 128, ffn: int = 2048
                    ) -> dict[str, tuple[int, ...]]:
    """Encoder keys and shapes of the official files (model_specs.json ``dofa_v{1,2}_*``), for any size."""
    k, grid = (16, 14) if version == 1 else (14, 16)
    vit = "" if version == 1 else "model."
    gen = "patch_embed.weight_generator."
    layer = gen + "transformer_encoder.layers.0."
    shapes = {f"{vit}cls_token": (1, 1, dim), f"{vit}pos_embed": (1, 1 + grid * grid, dim),
              gen + "weight_tokens": (128, planes), gen + "bias_token": (1, planes),
              layer + "self_attn.in_proj_weight": (3 * planes, planes), layer + "self_attn.in_proj_bias": (3 * planes,),
              layer + "self_attn.out_proj.weight": (planes, planes), layer + "self_attn.out_proj.bias": (planes,),
              layer + "linear1.weight": (ffn, planes), layer + "linear1.bias": (ffn,),
              layer + "linear2.weight": (planes, ffn), layer + "linear2.bias": (planes,),
              gen + "fc_weight.weight": (k * k * dim, planes), gen + "fc_weight.bias": (k * k * dim,),
              gen + "fc_bias.weight": (dim, planes), gen + "fc_bias.bias": (dim,)}
    for name in ("norm1", "norm2"):
        shapes |= {f"{layer}{name}.weight": (planes,), f"{layer}{name}.bias": (planes,)}
    for name in ("w1", "w2"):
        fc = f"patch_embed.fclayer.{name}."
        shapes |= {fc + "weight": (planes, planes), fc + "bias": (planes,)}
    for i in range(depth):
        b = f"{vit}blocks.{i}."
        shapes |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,), b + "attn.qkv.weight": (3 * dim, dim),
                   b + "attn.qkv.bias": (3 * dim,), b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                   b + "norm2.weight": (dim,), b + "norm2.bias": (dim,), b + "mlp.fc1.weight": (4 * dim, dim),
                   b + "mlp.fc1.bias": (4 * dim,), b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)}
        if version == 2:
            shapes |= {b + "ls1.gamma": (dim,), b + "ls2.gamma": (dim,)}
    if version == 2:
        shapes |= {"model.norm.weight": (dim,), "model.norm.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,)}
    return shapes


def random_state(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {key: 0.1 * torch.randn(shape, generator=gen) for key, shape in shapes.items()}
