"""The official DINOv2 position-embedding interpolation, re-read for the comparisons."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dinov2_interpolate(pos_embed: torch.Tensor, h: int, w: int, patch: int, offset: float = 0.1,
                       antialias: bool = False) -> torch.Tensor:
    """``DinoVisionTransformer.interpolate_pos_encoding(x, w, h)`` as written in facebookresearch/dinov2
    (``B, nc, w, h = x.shape``: its ``w`` is the image height)."""
    npatch, n = (h // patch) * (w // patch), pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos = pos_embed.float()
    class_pos, patch_pos = pos[:, 0], pos[:, 1:]
    dim = pos.shape[-1]
    w0, h0 = h // patch, w // patch
    m = int(math.sqrt(n))
    if offset:
        kwargs = {"scale_factor": (float(w0 + offset) / m, float(h0 + offset) / m)}
    else:
        kwargs = {"size": (w0, h0)}
    patch_pos = F.interpolate(patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                              antialias=antialias, **kwargs)
    assert (w0, h0) == patch_pos.shape[-2:]
    patch_pos = patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos.unsqueeze(0), patch_pos), dim=1).to(pos_embed.dtype)
