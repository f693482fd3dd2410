"""The chip grid: chips cover the scene, every output patch is written by exactly one chip (the most central one),
blocks tile the output grid."""

import itertools

import numpy as np
import pytest
from affine import Affine

pytest.importorskip("rasterio", reason="the scene extra")
from slimkern.scene.grid import ChipGrid  # noqa: E402

T = Affine(10, 0, 600_000, 0, -10, 5_200_000)
CASES = [(150, 200, 64, 64), (150, 200, 64, 32), (64, 64, 64, 16), (10, 700, 64, 48), (1000, 65, 224, 112),
         (500, 500, 224, 168), (97, 131, 56, 8)]


@pytest.mark.parametrize("height, width, crop, stride", CASES)
def test_patch_cores_partition_the_output_and_are_most_central(height, width, crop, stride):
    patch = 8
    grid = ChipGrid(height, width, T, crop, stride, patch, "patch", block=3)
    out_rows, out_cols = grid.out_shape
    owner = np.full(grid.out_shape, -1)
    for r, c in itertools.product(range(grid.chip_rows), range(grid.chip_cols)):
        r0, r1, c0, c1 = grid.chip_core(r, c)
        assert (owner[r0:r1, c0:c1] == -1).all(), "a patch written twice"
        owner[r0:r1, c0:c1] = r * grid.chip_cols + c
        row0, col0 = grid.chip_window(r, c)
        assert row0 <= r0 * patch and r1 * patch <= row0 + crop  # the core lies inside the chip
        assert col0 <= c0 * patch and c1 * patch <= col0 + crop
    assert (owner >= 0).all(), "a patch written by no chip"
    # most central: no other chip holding the patch has it closer to its centre (along each axis)
    for axis, count in ((0, grid.chip_rows), (1, grid.chip_cols)):
        for p in range(grid.out_shape[axis]):
            centre = (p + 0.5) * patch
            holders = [i for i in range(count) if i * stride <= p * patch and (p + 1) * patch <= i * stride + crop]
            best = min(abs(centre - (i * stride + crop / 2)) for i in holders)
            chosen = owner[p, 0] // grid.chip_cols if axis == 0 else owner[0, p] % grid.chip_cols
            assert abs(centre - (chosen * stride + crop / 2)) <= best + patch / 2  # ties: within half a patch


@pytest.mark.parametrize("height, width, crop, stride", CASES)
@pytest.mark.parametrize("per", ["chip", "patch"])
def test_chips_cover_the_scene_and_blocks_tile_the_output(height, width, crop, stride, per):
    grid = ChipGrid(height, width, T, crop, stride, 8, per, block=2)
    assert (grid.chip_rows - 1) * stride + crop >= height and (grid.chip_rows - 2) * stride + crop < height or \
        grid.chip_rows == 1
    covered = np.zeros(grid.out_shape, int)
    for block in grid.blocks():
        covered[block.out_row:block.out_row + block.out_rows, block.out_col:block.out_col + block.out_cols] += 1
    assert (covered == 1).all() and grid.block_count == len(list(grid.blocks()))


def test_output_transforms():
    assert ChipGrid(150, 200, T, 64, 64, 8, "chip", 2).out_transform == T @ Affine.scale(64)
    shifted = T @ Affine.translation(16, 16) @ Affine.scale(32)  # the stride cell centred on its chip
    assert ChipGrid(150, 200, T, 64, 32, 8, "chip", 2).out_transform == shifted
    assert ChipGrid(150, 200, T, 64, 32, 8, "patch", 2).out_transform == T @ Affine.scale(8)
