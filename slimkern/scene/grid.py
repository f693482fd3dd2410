"""The chip grid of a scene: where chips are read, which output pixels each one writes, and the output raster.

Chips of ``crop x crop`` pixels start every ``stride`` pixels from the scene's top-left corner. Along each
axis there are ``1 + ceil((size - crop) / stride)`` chips (one for a scene smaller than a chip), so the
chips cover the whole scene; chips reaching past the right or bottom edge are padded with nodata.

Output grids (both in the scene's CRS):

- ``per="chip"``: one pixel per chip. The pixel is the ``stride x stride`` cell centred on the chip (the
  chip itself when ``stride == crop``): transform = scene transform, shifted by ``(crop - stride) / 2``
  scene pixels and scaled by ``stride``.
- ``per="patch"``: one pixel per model patch (``patch x patch`` scene pixels), ``ceil(size / patch)``
  pixels per axis: transform = scene transform scaled by ``patch``. With overlap (``stride < crop``) each
  patch is taken from the chip in which it lies most centrally: a chip writes its central
  ``stride x stride`` region (its *core*), the first and last chip of a row or column also the margin
  towards the scene edge. Every output patch is written by exactly one chip, so patches near a chip's
  border, which see less context, are used only where no more central view exists.

Chips are processed in square *blocks* of ``block x block`` chips: the unit of reading, of resuming an
interrupted job and of writing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine

PER = ("chip", "patch")


def chip_count(size: int, crop: int, stride: int) -> int:
    """Chips along one axis of ``size`` pixels."""
    return 1 if size <= crop else 1 + math.ceil((size - crop) / stride)


@dataclass(frozen=True)
class Block:
    """``rows x cols`` chips starting at chip ``(row, col)``, with the output window they write."""

    row: int
    col: int
    rows: int
    cols: int
    out_row: int  # output window: [out_row, out_row + out_rows) x [out_col, out_col + out_cols)
    out_col: int
    out_rows: int
    out_cols: int

    @property
    def name(self) -> str:
        return f"{self.row:06d}_{self.col:06d}"


@dataclass(frozen=True)
class ChipGrid:
    """Chips and output grid of a ``height x width`` scene (see the module docstring)."""

    height: int
    width: int
    transform: Affine
    crop: int
    stride: int
    patch: int
    per: str
    block: int

    def __post_init__(self) -> None:
        if self.per not in PER:
            raise ValueError(f"per must be one of {', '.join(map(repr, PER))}; got {self.per!r}")
        if not 0 < self.stride <= self.crop:
            raise ValueError(f"stride {self.stride} must be between 1 and the crop {self.crop} (stride < crop "
                             "overlaps chips; a stride above the crop would leave gaps)")
        if self.per == "patch" and self.stride % self.patch:
            raise ValueError(f"per='patch' needs a stride that is a multiple of the patch size {self.patch} "
                             f"(got {self.stride}) so that chips share the patch grid")
        if self.block < 1:
            raise ValueError(f"block must be >= 1 chip, got {self.block}")

    # -- chips ---------------------------------------------------------------------------------------
    @property
    def chip_rows(self) -> int:
        return chip_count(self.height, self.crop, self.stride)

    @property
    def chip_cols(self) -> int:
        return chip_count(self.width, self.crop, self.stride)

    @property
    def chips(self) -> int:
        return self.chip_rows * self.chip_cols

    def chip_window(self, row: int, col: int) -> tuple[int, int]:
        """Top-left scene pixel ``(row, col)`` of chip ``(row, col)``; the chip is ``crop`` pixels square."""
        return row * self.stride, col * self.stride

    # -- output grid ---------------------------------------------------------------------------------
    @property
    def out_shape(self) -> tuple[int, int]:
        if self.per == "chip":
            return self.chip_rows, self.chip_cols
        return math.ceil(self.height / self.patch), math.ceil(self.width / self.patch)

    @property
    def out_transform(self) -> Affine:
        if self.per == "patch":
            return self.transform @ Affine.scale(self.patch)
        shift = (self.crop - self.stride) / 2
        return self.transform @ Affine.translation(shift, shift) @ Affine.scale(self.stride)

    def pixel_window(self, out_row: int, out_col: int) -> tuple[int, int, int, int]:
        """Scene pixels ``(row0, col0, rows, cols)`` an output pixel's embedding was computed from (clipped to the
        scene): the chip (``per="chip"``) or the patch (``per="patch"``)."""
        if self.per == "chip":
            row0, col0 = self.chip_window(out_row, out_col)
            size = self.crop
        else:
            row0, col0, size = out_row * self.patch, out_col * self.patch, self.patch
        return row0, col0, min(size, self.height - row0), min(size, self.width - col0)

    def _axis_core(self, index: int, axis: int) -> tuple[int, int]:
        """Output patches ``[start, end)`` along ``axis`` written by chip ``index`` (per='patch')."""
        count = self.chip_rows if axis == 0 else self.chip_cols
        patches, step = self.crop // self.patch, self.stride // self.patch
        margin = (patches - step) // 2
        total = self.out_shape[axis]
        start = 0 if index == 0 else index * step + margin
        end = total if index == count - 1 else min(total, index * step + margin + step)
        return start, end

    def chip_core(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``: the output patches chip ``(row, col)`` writes (per='patch')."""
        return (*self._axis_core(row, 0), *self._axis_core(col, 1))

    # -- blocks ----------------------------------------------------------------------------------------
    def blocks(self) -> Iterator[Block]:
        """The blocks in row-major order."""
        for row in range(0, self.chip_rows, self.block):
            for col in range(0, self.chip_cols, self.block):
                rows, cols = min(self.block, self.chip_rows - row), min(self.block, self.chip_cols - col)
                if self.per == "chip":
                    window = (row, col, rows, cols)
                else:
                    r0, _, c0, _ = self.chip_core(row, col)
                    _, r1, _, c1 = self.chip_core(row + rows - 1, col + cols - 1)
                    window = (r0, c0, r1 - r0, c1 - c0)
                yield Block(row, col, rows, cols, *window)

    @property
    def block_count(self) -> int:
        return math.ceil(self.chip_rows / self.block) * math.ceil(self.chip_cols / self.block)
