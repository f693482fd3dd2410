"""The one patch embedding of every family: an exact patchify followed by one GEMM.

A convolution whose stride equals its kernel (ViT ``PatchEmbed``, Prithvi's 1-frame ``Conv3d``, DOFA's generated
kernels, SatMAE's per-group convs, Panopticon's per-band conv) sees each input pixel once, so it IS a matrix
product: cut the image into non-overlapping ``p x p`` patches, flatten each to a row, multiply by the kernel viewed
as ``[D, C*p*p]``. slimkern computes every stem that way instead of calling ``F.conv2d``:

- correctness: torch 2.14.1's oneDNN bfloat16 convolution on AMX CPUs returns garbage for 4, 6, 8, 12 and 16 input
  channels (issue 12), silently; a GEMM is the op every transformer block already runs (and ``slimkern doctor``
  probes it), so the stem depends on no kernel the blocks do not;
- one code path for all families, whose FLOPs are exactly ``patch_embed_flops`` (2 * patches * C*p*p * D);
- on the CPU it is the same fused oneDNN GEMM as the blocks' (:mod:`slimkern.backends.torch.onednn`) where that
  passed its probes, else ``F.linear``.

Padding follows ``conv2d(..., padding=k)`` with ``stride = kernel``: the image is zero-padded on every side and the
full patches the convolution would see are taken (a last partial row or column of patches is dropped, as the
convolution drops it). DOFA and Copernicus-FM use ``padding=1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backends.torch import onednn


def patchify(x: torch.Tensor, patch: int, *, padding: int = 0, channels_last: bool = False
             ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Non-overlapping patches of ``x`` ``[B, C, H, W]`` as rows: ``[B, rows * cols, C*p*p]``, patches row-major.

    Each row is flattened ``(c, i, j)`` (channel slowest, a conv kernel's order) or, with ``channels_last``,
    ``(i, j, c)`` (TerraMind's linear stem). Returns the rows and the ``(rows, cols)`` grid; one copy of ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f"patchify expects images [B, C, H, W], got shape {tuple(x.shape)}")
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    batch, channels, height, width = x.shape
    rows, cols = height // patch, width // patch
    if rows < 1 or cols < 1:
        raise ValueError(f"an image of {height}x{width} px (padding included) holds no {patch}x{patch} patch")
    grid = x[:, :, : rows * patch, : cols * patch].reshape(batch, channels, rows, patch, cols, patch)
    order = (0, 2, 4, 3, 5, 1) if channels_last else (0, 2, 4, 1, 3, 5)
    return grid.permute(order).reshape(batch, rows * cols, channels * patch * patch), (rows, cols)


def patch_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, patch: int, *, padding: int = 0,
                channels_last: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch tokens ``[B, rows * cols, D]`` (row-major) and the ``(rows, cols)`` grid, computed in ``x.dtype``.

    Equals ``conv2d(x, weight, bias, stride=patch, padding=padding).flatten(2).transpose(1, 2)`` for a kernel
    ``weight`` ``[D, C, p, p]``; ``weight`` may also be the flat ``[D, C*p*p]`` matrix of a linear stem whose columns
    are in :func:`patchify`'s order (``channels_last`` for ``(i, j, c)``).
    """
    rows, grid = patchify(x, patch, padding=padding, channels_last=channels_last)
    matrix = weight.reshape(weight.shape[0], -1)
    if matrix.shape[1] != rows.shape[-1]:
        raise ValueError(f"patch embedding: a {patch}x{patch} patch of {x.shape[1]} bands has {rows.shape[-1]} "
                         f"values but the weight {tuple(weight.shape)} takes {matrix.shape[1]}")
    dtype = x.dtype
    matrix, bias = matrix.to(dtype), None if bias is None else bias.to(dtype)
    if onednn.active(rows) and onednn.dense(matrix):  # the CPU's faster GEMM, where it passed its probes
        return onednn.linear(rows, matrix, bias), grid
    return F.linear(rows, matrix, bias), grid
