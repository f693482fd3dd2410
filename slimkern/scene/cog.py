"""Embeddings as a Cloud-Optimized GeoTIFF: one pixel per chip or patch, one band per embedding dimension.

The finished blocks are cut into whole tiles and written into a tiled GeoTIFF (one tile in memory at a time),
which GDAL's COG driver then copies into the COG: pixel-interleaved tiles (all dimensions of a location in one
tile of at most 4 MiB), deflate (level 1: embeddings barely compress, so higher levels only cost time),
overviews by averaging (nodata left out), NaN as nodata, float32 or float16 (stored as IEEE half floats,
``NBITS=16``: readers get float32 values that are exactly the halves). It passes ``rio cogeo validate``.
The run's ``model.provenance(...)`` and the job are one JSON GDAL metadata item, ``SLIMKERN_METADATA``
(``gdalinfo`` shows it; :func:`read_metadata` parses it).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from .grid import ChipGrid
from .partial import PartialOutput

TILE_BYTES = 4 << 20  # a tile of all dimensions stays under 4 MiB (read in one request)
TAG = "SLIMKERN_METADATA"


def tile_size(dims: int, itemsize: int) -> int:
    """The largest COG tile side (256 .. 16) whose tile of ``dims`` bands fits in :data:`TILE_BYTES`."""
    for side in (256, 128, 64, 32):
        if side * side * dims * itemsize <= TILE_BYTES:
            return side
    return 16


def write_cog(partial: PartialOutput, grid: ChipGrid, crs, dims: int, dtype: str, metadata: dict, path: Path
              ) -> None:
    """Assemble the blocks of ``partial`` into a COG at ``path``."""
    half = dtype == "float16"
    side = tile_size(dims, 2 if half else 4)
    height, width = grid.out_shape
    profile = {"driver": "GTiff", "dtype": "float32", "count": dims, "height": height, "width": width,
               "crs": crs, "transform": grid.out_transform, "nodata": float("nan"), "tiled": True,
               "blockxsize": side, "blockysize": side, "interleave": "pixel", "BIGTIFF": "IF_SAFER",
               **({"nbits": 16} if half else {})}
    assembly = partial.dir / "assembly.tif"
    with rasterio.open(assembly, "w", **profile) as dst:
        dst.update_tags(**{TAG: json.dumps(metadata, sort_keys=True)})
        for window, tile in _tiles(partial, grid, side, dims):
            dst.write(np.moveaxis(tile, -1, 0), window=window)
    # GDAL's COG driver: overviews first, then the tiles; one copy (rio-cogeo's cog_translate makes two more)
    rasterio.shutil.copy(assembly, path, driver="COG", BLOCKSIZE=side, COMPRESS="DEFLATE", LEVEL=1,
                         PREDICTOR="YES", OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER",
                         **({"NBITS": 16} if half else {}))
    assembly.unlink()


def _tiles(partial: PartialOutput, grid: ChipGrid, side: int, dims: int):
    """Whole output tiles ``(window, [rows, cols, dims] float32)`` in row-major order, cut from the blocks.

    Writing whole tiles lets GDAL store each tile once; windows that cut tiles make it read tiles back and
    rewrite them (all dimensions each time), which with a bounded block cache takes far longer than the model.
    """
    blocks = list(grid.blocks())
    height, width = grid.out_shape
    cache: OrderedDict[str, np.ndarray] = OrderedDict()  # the blocks of the current tile row, a few at a time
    for row in range(0, height, side):
        rows = min(side, height - row)
        for col in range(0, width, side):
            cols = min(side, width - col)
            tile = np.full((rows, cols, dims), np.nan, np.float32)
            for b in blocks:
                r0, r1 = max(row, b.out_row), min(row + rows, b.out_row + b.out_rows)
                c0, c1 = max(col, b.out_col), min(col + cols, b.out_col + b.out_cols)
                if r0 >= r1 or c0 >= c1:
                    continue
                if b.name not in cache:
                    cache[b.name] = partial.load_block(b.name, "embedding")["embedding"]
                    if len(cache) > 16:
                        cache.popitem(last=False)
                emb = cache[b.name]
                tile[r0 - row:r1 - row, c0 - col:c1 - col] = emb[r0 - b.out_row:r1 - b.out_row,
                                                                 c0 - b.out_col:c1 - b.out_col]
            yield rasterio.windows.Window(col, row, cols, rows), tile


def read_metadata(path: str | Path) -> dict:
    """The slimkern metadata of a COG written by :func:`write_cog` (``{}`` for other files)."""
    with rasterio.open(path) as src:
        return json.loads(src.tags().get(TAG, "{}"))
