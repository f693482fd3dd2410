"""Embeddings as a Cloud-Optimized GeoTIFF: one pixel per chip or patch, one band per embedding dimension.

The finished blocks are written window by window into a tiled GeoTIFF (GDAL's block cache bounded, so memory
does not grow with the scene), which rio-cogeo then turns into the COG: pixel-interleaved tiles (all dimensions
of a location in one tile), deflate, overviews by averaging (nodata left out), NaN as nodata, float32 or
float16 (stored as IEEE half floats, ``NBITS=16``: readers get float32 values that are exactly the halves).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rio_cogeo.cogeo import cog_translate

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
        for block in grid.blocks():
            emb = partial.load_block(block.name)["embedding"]
            window = rasterio.windows.Window(block.out_col, block.out_row, block.out_cols, block.out_rows)
            dst.write(np.moveaxis(emb, -1, 0).astype(np.float32), window=window)
    cog = {"driver": "GTiff", "interleave": "pixel", "tiled": True, "blockxsize": side, "blockysize": side,
           "compress": "DEFLATE", "predictor": 3, "BIGTIFF": "IF_SAFER", **({"nbits": 16} if half else {})}
    cog_translate(assembly, path, cog, overview_resampling="average", in_memory=False, quiet=True,
                  additional_cog_metadata={TAG: json.dumps(metadata, sort_keys=True)})
    assembly.unlink()


def read_metadata(path: str | Path) -> dict:
    """The slimkern metadata of a COG written by :func:`write_cog` (``{}`` for other files)."""
    with rasterio.open(path) as src:
        return json.loads(src.tags().get(TAG, "{}"))
