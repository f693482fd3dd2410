"""Fixed sin-cos position embeddings (MAE ``util/pos_embed.py`` convention), computed in float64."""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[len(positions), dim]``: ``[sin(p * w), cos(p * w)]`` with ``w_i = 10000^(-i / (dim/2))``."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64).reshape(-1, 1) * omega
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``[grid_h * grid_w, dim]`` for row-major patches: the first half encodes the COLUMN, the second
    the row (MAE's ``np.meshgrid(grid_w, grid_h)`` order). ``scale`` multiplies the positions (Scale-MAE
    passes the ground sample distance ratio ``res``)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")
    cols, rows = cols.reshape(-1) * scale, rows.reshape(-1) * scale
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


def resample_abs_pos_embed(pos: torch.Tensor, grid: list[int], **kwargs) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed`` (learned positions are resampled exactly as the official timm models do),
    imported on first use: importing ``timm.layers`` takes seconds (it loads torchvision and torch._dynamo), and a
    model needs it only to run at another image size than its native one."""
    from timm.layers import resample_abs_pos_embed as timm_resample

    return timm_resample(pos, grid, **kwargs)
