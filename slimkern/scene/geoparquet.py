"""Embeddings as GeoParquet 1.1: one row per chip (``per="chip"``) or patch (``per="patch"``) with data.

Columns: ``scene`` (id), ``row``/``col`` (output grid position: chip or patch index), ``width`` and
``relative_flops`` (the slimming of the job), ``valid_fraction`` (share of the footprint that was data, not
nodata), ``embedding`` (fixed-size list of float32 or float16) and ``geometry`` (WKB polygon of the pixels the
embedding was computed from, clipped to the scene, in the scene's CRS). Chips or patches without data get no
row. Rows are written a row group at a time from the finished blocks; the ``geo`` metadata (CRS as PROJJSON,
bounding box) follows the GeoParquet 1.1 specification. The file metadata key ``slimkern`` holds the run's
``model.provenance(...)`` and the job as JSON (:func:`read_metadata`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from .grid import ChipGrid
from .partial import PartialOutput

ROW_GROUP = 8192
KEY = b"slimkern"


def schema(dims: int, dtype: str, geo: dict, metadata: dict) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema([("scene", pa.string()), ("row", pa.int32()), ("col", pa.int32()), ("width", pa.float64()),
                      ("relative_flops", pa.float64()), ("valid_fraction", pa.float32()),
                      ("embedding", pa.list_(value, dims)), ("geometry", pa.binary())],
                     metadata={b"geo": json.dumps(geo).encode(), KEY: json.dumps(metadata, sort_keys=True).encode()})


def footprints(grid: ChipGrid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Polygons (shapely) of the scene pixels behind output pixels ``(rows, cols)``, clipped to the scene."""
    if grid.per == "chip":
        row0, col0, size = rows * grid.stride, cols * grid.stride, grid.crop
    else:
        row0, col0, size = rows * grid.patch, cols * grid.patch, grid.patch
    row1, col1 = np.minimum(row0 + size, grid.height), np.minimum(col0 + size, grid.width)
    corners = [(col0, row0), (col1, row0), (col1, row1), (col0, row1), (col0, row0)]
    t = grid.transform
    ring = np.stack([np.stack([t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f], -1) for c, r in corners], 1)
    return shapely.polygons(ring)


def write_geoparquet(partial: PartialOutput, grid: ChipGrid, crs, dims: int, dtype: str, metadata: dict,
                     path: Path) -> None:
    """Write the blocks of ``partial`` as GeoParquet rows to ``path``."""
    blocks = list(grid.blocks())
    bounds = _bounds(partial, grid, blocks)
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                    "crs": CRS.from_wkt(crs.to_wkt()).to_json_dict(),
                                    **({"bbox": bounds} if bounds else {})}}}
    table_schema = schema(dims, dtype, geo, metadata)
    pending, count = [], 0
    with pq.ParquetWriter(path, table_schema, compression="zstd") as writer:
        for block in blocks:
            arrays = partial.load_block(block.name)
            if arrays["valid"].any():
                table = _rows(arrays, block, grid, dtype, metadata, table_schema)
                pending.append(table)
                count += table.num_rows
            if count >= ROW_GROUP:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
                pending, count = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)


def _rows(arrays: dict, block, grid: ChipGrid, dtype: str, metadata: dict, table_schema: pa.Schema) -> pa.Table:
    valid = arrays["valid"]
    local_rows, local_cols = np.nonzero(valid > 0)
    rows, cols = local_rows + block.out_row, local_cols + block.out_col
    emb = arrays["embedding"][local_rows, local_cols].astype(dtype)
    n, dims = emb.shape
    columns = [pa.array([metadata["scene"]] * n, pa.string()), pa.array(rows, pa.int32()), pa.array(cols, pa.int32()),
               pa.array(np.full(n, metadata["provenance"]["width"]), pa.float64()),
               pa.array(np.full(n, metadata["relative_flops"]), pa.float64()),
               pa.array(valid[local_rows, local_cols], pa.float32()),
               pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dims),
               pa.array(shapely.to_wkb(footprints(grid, rows, cols)), pa.binary())]
    return pa.Table.from_arrays(columns, schema=table_schema)


def _bounds(partial: PartialOutput, grid: ChipGrid, blocks) -> list[float] | None:
    """Bounding box of every row's geometry (a first pass over the blocks' validity only)."""
    box = None
    for block in blocks:
        valid = partial.load_block(block.name, "valid")["valid"]
        rows, cols = np.nonzero(valid > 0)
        if len(rows):
            b = shapely.total_bounds(footprints(grid, rows + block.out_row, cols + block.out_col))
            box = b if box is None else np.concatenate([np.minimum(box[:2], b[:2]), np.maximum(box[2:], b[2:])])
    return None if box is None else [float(v) for v in box]


def read_metadata(path: str | Path) -> dict:
    """The slimkern metadata of a GeoParquet file written by :func:`write_geoparquet` (``{}`` for others)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(KEY, b"{}"))
