"""GeoParquet output read back with geopandas and pyarrow: geometry, CRS, columns, metadata, values."""

import json

import numpy as np
import pytest
import rasterio
import shapely

from tests.scene.scenes import CRS, TRANSFORM, expected_embedding, expected_input, rgb_model, write_raster

gpd = pytest.importorskip("geopandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow", reason="the scene extra")
from slimkern.scene import embed_scene  # noqa: E402

H, W = 150, 200


@pytest.fixture(scope="module")
def model():
    return rgb_model()


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(5).integers(1, 255, (3, H, W), dtype=np.uint8)
    data[:, :64, :64] = 0  # one chip without data
    data[:, 64:100, 64:128] = 0  # one chip half nodata
    return data, write_raster(tmp_path / "tile.tif", data, nodata=0, descriptions=("R", "G", "B"))


def box(row0, col0, rows, cols):
    """The polygon of scene pixels [row0, row0 + rows) x [col0, col0 + cols), computed from the transform."""
    x0, y0 = TRANSFORM * (col0, row0)
    x1, y1 = TRANSFORM * (col0 + cols, row0 + rows)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_one_row_per_chip_with_its_footprint_crs_and_embedding(tmp_path, model, scene):
    data, path = scene
    out = tmp_path / "emb.parquet"
    embed_scene(model, path, 0.25, out=out, stride=48, progress=False)
    df = gpd.read_parquet(out)
    assert df.crs == CRS
    assert list(df.columns) == ["scene", "row", "col", "width", "relative_flops", "valid_fraction", "embedding",
                                "geometry"]
    rows = {(r.row, r.col): r for r in df.itertuples()}
    expected_rows = 0
    for i in range(3):  # 1 + ceil((150 - 64) / 48) = 3 chip rows, 1 + ceil((200 - 64) / 48) = 4 columns
        for j in range(4):
            x, valid = expected_input(model, data, i * 48, j * 48, 64, (0, 1, 2), 0, 1 / 255)
            if not valid.any():
                assert (i, j) not in rows
                continue
            expected_rows += 1
            row = rows[i, j]
            assert row.scene == "tile" and row.width == 0.25
            assert row.relative_flops == pytest.approx(model.relative_flops(0.25))
            assert row.valid_fraction == pytest.approx(valid.mean())
            # the chip's pixels clipped to the scene (chips at the edge are padded with nodata)
            footprint = box(i * 48, j * 48, min(64, H - i * 48), min(64, W - j * 48))
            assert row.geometry.equals(footprint), (i, j, row.geometry, footprint)
            np.testing.assert_allclose(np.asarray(row.embedding), expected_embedding(model, x, 0.25), rtol=1e-4,
                                       atol=1e-5)
    assert len(df) == expected_rows
    assert 0 < df.valid_fraction.min() < 1  # the half-nodata chip


def test_geoparquet_metadata_and_the_cog_hold_the_same_values(tmp_path, model, scene):
    _, path = scene
    out = tmp_path / "emb.parquet"
    embed_scene(model, path, 0.5, out=out, per="patch", dtype="float16", progress=False)
    table = pq.read_table(out)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 32632}
    geometries = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    assert column["bbox"] == pytest.approx(list(shapely.total_bounds(geometries)))
    embedding = table.schema.field("embedding").type
    assert embedding.list_size == model.dim and embedding.value_type == pa.float16()
    for geometry, r, c in zip(geometries[:50], table["row"].to_pylist(), table["col"].to_pylist(), strict=False):
        assert geometry.equals(box(r * 8, c * 8, min(8, H - r * 8), min(8, W - c * 8)))

    cog = tmp_path / "emb.tif"
    embed_scene(model, path, 0.5, out=cog, per="patch", dtype="float16", progress=False)
    with rasterio.open(cog) as src:
        grid = src.read()
    values = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_array_equal(values, grid[:, table["row"].to_numpy(), table["col"].to_numpy()].T)
    assert np.isfinite(grid).all(0).sum() == len(values)  # every patch with data is a row, the rest is nodata
