"""embed_scene on real GeoTIFFs: output grid and CRS, every chip/patch against model.run on its window, nodata,
overlap, band layouts (pixel/band interleave, named/unnamed bands, one file per band, resampled bands)."""

import math
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.scene.scenes import CRS, TRANSFORM, expected_embedding, expected_input, rgb_model, sar_model, write_raster

pq = pytest.importorskip("pyarrow.parquet", reason="the scene extra")
from slimkern.scene import embed_scene  # noqa: E402
from slimkern.scene.source import open_scene  # noqa: E402

H, W = 150, 200  # not multiples of the 64 px chip


@pytest.fixture(scope="module")
def model():
    return rgb_model()


def rgbn_scene(rng, dtype=np.uint8, nodata=0):
    """Bands B, G, R, N (file order) with a nodata strip on top and a nodata hole."""
    data = rng.integers(1, 255, (4, H, W)).astype(dtype)
    data[:, :70, :] = nodata  # chips of the first row: all nodata (cols 0..63 of rows 0..63) or partial
    data[2, 100:110, 20:30] = nodata  # one band missing is enough to make a pixel nodata
    return data


@pytest.mark.parametrize("layout, stride", [("pixel", 64), ("band", 40)])
def test_every_chip_equals_model_run_on_its_window(tmp_path, model, layout, stride):
    rng = np.random.default_rng(1)
    data = rgbn_scene(rng, np.uint16 if layout == "band" else np.uint8)
    names = ("B", "G", "R", "N")
    path = write_raster(tmp_path / "s.tif", data, nodata=0, interleave=layout,
                        descriptions=names if layout == "pixel" else None)
    out = tmp_path / "emb.tif"
    bands = None if layout == "pixel" else names  # band descriptions, or named by the caller
    result = embed_scene(model, path, 0.5, out=out, stride=stride, bands=bands, progress=False, batch_size=5)
    rows, cols = (1 + math.ceil((n - 64) / stride) for n in (H, W))
    with rasterio.open(out) as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS)
        shift = (64 - stride) / 2  # the output pixel is the stride cell centred on its chip
        assert src.transform.almost_equals(TRANSFORM @ Affine.translation(shift, shift) @ Affine.scale(stride))
        assert (src.height, src.width, src.count) == (rows, cols, model.dim)
        emb = src.read()
    empty = 0
    for r in range(rows):
        for c in range(cols):
            x, valid = expected_input(model, data, r * stride, c * stride, 64, (2, 1, 0), 0, 1 / 255)
            if not valid.any():
                assert np.isnan(emb[:, r, c]).all(), (r, c)
                empty += 1
                continue
            np.testing.assert_allclose(emb[:, r, c], expected_embedding(model, x, 0.5), rtol=1e-4, atol=1e-5)
    assert empty > 0 and result.skipped == empty and result.embedded == rows * cols - empty


def test_per_patch_overlap_takes_each_patch_from_its_most_central_chip(tmp_path, model):
    rng = np.random.default_rng(2)
    data = rgbn_scene(rng)
    path = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=("B", "G", "R", "N"))
    crop, stride, patch = 64, 32, 8
    out = tmp_path / "emb.tif"
    embed_scene(model, path, 0.25, out=out, per="patch", stride=stride, dtype="float16", progress=False)
    with rasterio.open(out) as src:
        assert src.transform.almost_equals(TRANSFORM @ Affine.scale(patch))
        assert (src.height, src.width) == (math.ceil(H / patch), math.ceil(W / patch))
        assert src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
        emb = src.read()
    n_rows, n_cols = (1 + math.ceil((n - crop) / stride) for n in (H, W))
    step, margin = stride // patch, (crop // patch - stride // patch) // 2
    tokens = {}
    for R in range(emb.shape[1]):
        for C in range(emb.shape[2]):
            # the owner: the chip whose central stride x stride region holds the patch (edge chips own the margin)
            i = min(max((R - margin) // step, 0), n_rows - 1)
            j = min(max((C - margin) // step, 0), n_cols - 1)
            pixels = data[:, R * patch:(R + 1) * patch, C * patch:(C + 1) * patch]
            if (pixels == 0).any(0).all():
                assert np.isnan(emb[:, R, C]).all(), (R, C)
                continue
            if (i, j) not in tokens:
                x, _ = expected_input(model, data, i * stride, j * stride, crop, (2, 1, 0), 0, 1 / 255)
                tokens[i, j] = expected_embedding(model, x, 0.25, "tokens")[1:].reshape(8, 8, -1)
            want = tokens[i, j][R - i * step, C - j * step].astype(np.float16).astype(np.float32)
            np.testing.assert_allclose(emb[:, R, C], want, rtol=2e-3, atol=2e-3)


def test_unnamed_bands_in_the_models_order_and_float_nodata(tmp_path):
    model = sar_model()
    rng = np.random.default_rng(3)
    data = rng.normal(-15, 4, (2, 61, 45)).astype(np.float32)  # VV, VH in dB; 28 px chips; sizes not multiples
    data[:, 30:, 30:] = np.nan  # NaN nodata, as float products carry it
    path = write_raster(tmp_path / "s1.tif", data, nodata=float("nan"))
    out = tmp_path / "emb.tif"
    embed_scene(model, path, 1.0, out=out, progress=False)
    with rasterio.open(out) as src:
        emb = src.read()
    assert emb.shape[1:] == (3, 2)
    for r in range(3):
        for c in range(2):
            x, valid = expected_input(model, data, r * 28, c * 28, 28, (0, 1), None, 1.0)
            if valid.any():
                np.testing.assert_allclose(emb[:, r, c], expected_embedding(model, x, 1.0), rtol=1e-4, atol=1e-5)
            else:
                assert np.isnan(emb[:, r, c]).all()


def test_one_file_per_band_stacked_by_name(tmp_path):
    model = sar_model()
    rng = np.random.default_rng(4)
    data = rng.normal(-15, 4, (2, 56, 70)).astype(np.float32)
    vv = write_raster(tmp_path / "S1_VV.tif", data[:1])
    vh = write_raster(tmp_path / "S1_VH.tif", data[1:])
    out = tmp_path / "emb.tif"
    result = embed_scene(model, {"VH": vh, "VV": vv}, 1.0, out=out, progress=False)  # in another order than the model
    assert result.scene == "S1"
    with rasterio.open(out) as src:
        emb = src.read()
    for r in range(2):
        for c in range(3):
            x, _ = expected_input(model, data, r * 28, c * 28, 28, (0, 1), None, 1.0)
            np.testing.assert_allclose(emb[:, r, c], expected_embedding(model, x, 1.0), rtol=1e-4, atol=1e-5)


def test_coarser_band_file_is_resampled_to_the_finest_grid(tmp_path):
    model = sar_model()
    vv = np.random.default_rng(5).normal(-15, 4, (1, 56, 56)).astype(np.float32)
    vh = np.full((1, 28, 28), -21.5, np.float32)  # 20 m over the same extent: bilinear keeps a constant exact
    paths = {"VV": write_raster(tmp_path / "s_VV.tif", vv),
             "VH": write_raster(tmp_path / "s_VH.tif", vh, transform=TRANSFORM @ Affine.scale(2))}
    scene = open_scene(paths)
    assert (scene.height, scene.width) == (56, 56) and [f.warp for f in scene.files] == [False, True]
    out = tmp_path / "emb.tif"
    embed_scene(model, scene, 1.0, out=out, progress=False, check="off")  # the constant VH is not plausible input
    with rasterio.open(out) as src:
        emb = src.read()
    stacked = np.concatenate([vv, np.full((1, 56, 56), -21.5, np.float32)])
    x, _ = expected_input(model, stacked, 28, 0, 28, (0, 1), None, 1.0)
    np.testing.assert_allclose(emb[:, 1, 0], expected_embedding(model, x, 1.0), rtol=1e-4, atol=1e-5)


def test_a_folder_of_sentinel2_band_files_takes_the_finest_resolution_per_band(tmp_path):
    granule = tmp_path / "S2B_MSIL2A_X.SAFE" / "GRANULE" / "L2A_T32" / "IMG_DATA"
    for band, metres in [("B04", 10), ("B04", 20), ("B8A", 20), ("B02", 10)]:
        folder = granule / f"R{metres}m"
        folder.mkdir(parents=True, exist_ok=True)
        data = np.ones((1, 400 // metres, 400 // metres), np.uint16)  # 400 m x 400 m at every resolution
        write_raster(folder / f"T32TQM_20230101T101031_{band}_{metres}m.tif", data,
                     transform=TRANSFORM @ Affine.scale(metres / 10))
    write_raster(granule / "R10m" / "T32TQM_20230101T101031_TCI_10m.tif", np.ones((3, 40, 40), np.uint8))
    scene = open_scene(tmp_path / "S2B_MSIL2A_X.SAFE")
    assert scene.id == "S2B_MSIL2A_X"
    assert scene.band_names == ("B02", "B04", "B8A")
    assert [f.path.endswith(s) for f, s in zip(scene.files, ("B02_10m.tif", "B04_10m.tif", "B8A_20m.tif"),
                                                strict=True)] == [True] * 3
    assert [f.warp for f in scene.files] == [False, False, True]


def test_the_cog_is_valid_with_averaged_overviews(tmp_path, model):
    cog_validate = pytest.importorskip("rio_cogeo.cogeo").cog_validate
    data = np.random.default_rng(6).integers(1, 255, (3, 1100, 1100), dtype=np.uint8)
    data[:, :300, :300] = 0
    path = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=("R", "G", "B"), block=256)
    out = tmp_path / "emb.tif"
    embed_scene(model, path, 0.1, out=out, per="patch", progress=False, batch_size=64)
    valid, errors, notes = cog_validate(out, quiet=True)
    assert valid and not errors and not notes
    with rasterio.open(out) as src:
        assert (src.height, src.width, src.block_shapes[0]) == (138, 138, (128, 128))  # 64 dims x 4 bytes: 128 px
        assert src.overviews(1) == [2] and src.nodata != src.nodata  # NaN
        full = src.read()
        half = src.read(out_shape=(src.count, 69, 69))  # the overview
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of four nodata pixels is NaN, as it should be
        means = np.nanmean(full.reshape(src.count, 69, 2, 69, 2), axis=(2, 4))
    np.testing.assert_allclose(half, means, rtol=1e-5, atol=1e-6)  # NaN (nodata) where all four are nodata


def test_an_internal_mask_band_marks_nodata(tmp_path, model):
    data = np.random.default_rng(8).integers(1, 255, (3, 64, 128), dtype=np.uint8)
    path = write_raster(tmp_path / "masked.tif", data, descriptions=("R", "G", "B"))
    with rasterio.open(path, "r+") as dst:  # no nodata value: a mask band (GDAL's per-dataset mask) says it
        mask = np.full((64, 128), 255, np.uint8)
        mask[:, 64:] = 0
        mask[:10, :10] = 0
        dst.write_mask(mask)
    out = tmp_path / "emb.parquet"
    embed_scene(model, path, 1.0, out=out, progress=False)
    table = pq.read_table(out)
    assert table["col"].to_pylist() == [0]  # the second chip is masked out entirely
    assert table["valid_fraction"].to_pylist() == [pytest.approx(1 - 100 / 64**2)]
    x, _ = expected_input(model, np.where(mask > 0, data, 0), 0, 0, 64, (0, 1, 2), 0, 1 / 255)
    np.testing.assert_allclose(table["embedding"].to_pylist()[0], expected_embedding(model, x, 1.0), rtol=1e-4,
                               atol=1e-5)
