"""Scene chips through model.prepare: band names and wavelengths of a wavelength-conditioned model, per-chip
statistics, the plausibility check on chips without nodata only (check= error/warn/off), and the run's provenance
in the COG tags and the GeoParquet metadata."""

import json
import warnings

import numpy as np
import pytest
import rasterio

import slimkern
from slimkern.input_check import InputCheckWarning
from slimkern.provenance import file_sha256
from tests.scene.scenes import rgb_model, window, write_raster

pq = pytest.importorskip("pyarrow.parquet", reason="the scene extra")
from slimkern.scene import SceneError, embed_scene  # noqa: E402
from slimkern.scene.cog import TAG  # noqa: E402
from slimkern.scene.geoparquet import KEY  # noqa: E402

S2 = ("B08", "B04", "B03", "B02")  # file order: not the model's, found by name


@pytest.fixture(scope="module")
def dofa():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("dofa_base", depth=1, dim=48, num_heads=2, img_size=32)


@pytest.mark.parametrize("stats", [None, ((900.0, 1100, 1000, 1200), (300.0, 250, 200, 350))])
def test_a_wavelength_model_gets_each_chips_prepare(tmp_path, dofa, stats):
    rng = np.random.default_rng(11)
    data = rng.integers(1, 4000, (4, 50, 70)).astype(np.uint16)
    data[:, :20, :40] = 0  # a partial chip (filled with its own mean) and, with the edge, a nodata column
    path = write_raster(tmp_path / "s2.tif", data, nodata=0, descriptions=S2)
    out = tmp_path / "emb.tif"
    embed_scene(dofa, path, 0.5, out=out, stats=stats, batch_size=3, progress=False)
    with rasterio.open(out) as src:
        emb = src.read()
    assert emb.shape == (48, 2, 3)
    for r in range(2):
        for c in range(3):
            chip, valid = window(data, r * 32, c * 32, 32, 0)
            p = dofa.prepare(chip[None], bands=list(S2), stats=stats)  # per chip: its own statistics if no stats
            assert p.inputs["wavelengths"] == (0.842, 0.665, 0.56, 0.49)
            want = dofa.run(p.x, 0.5, check="off", **p.inputs)[0].numpy()
            np.testing.assert_allclose(emb[:, r, c], want, rtol=1e-4, atol=1e-5)


def test_nodata_does_not_trip_the_check_and_raw_data_still_does(tmp_path):
    model = rgb_model()
    data = np.random.default_rng(12).integers(1, 255, (3, 64, 128), dtype=np.uint8)
    data[:, :, 64:] = 0
    data[:, 5, 70] = (200, 100, 50)  # the second chip: one valid pixel, its own batch
    path = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=("R", "G", "B"))
    result = embed_scene(model, path, 1.0, out=tmp_path / "emb.tif", batch_size=1, progress=False)
    assert result.embedded == 2
    chip, _ = window(data, 0, 64, 64, 0)  # filled with its one pixel: every band constant
    x = model.prepare(chip[None], bands=["R", "G", "B"]).x
    with pytest.raises(ValueError, match="constant"):  # what the check says if it saw that chip
        model.run(x, 1.0)
    with pytest.raises(SceneError, match=r"scene s: .*band medians .* beyond \+-50.*--units"):
        embed_scene(model, path, 1.0, out=tmp_path / "wrong.tif", units="reflectance", progress=False)


def test_check_warn_warns_once_and_off_is_silent(tmp_path):
    model = rgb_model()
    data = np.random.default_rng(13).integers(1, 255, (3, 128, 128), dtype=np.uint8)
    path = write_raster(tmp_path / "s.tif", data, descriptions=("R", "G", "B"))
    with pytest.warns(InputCheckWarning) as caught:
        embed_scene(model, path, 1.0, out=tmp_path / "a.tif", units="reflectance", check="warn", batch_size=1,
                    progress=False)
    assert len([w for w in caught if w.category is InputCheckWarning]) == 1  # 4 batches, one warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputCheckWarning)
        embed_scene(model, path, 1.0, out=tmp_path / "b.tif", units="reflectance", check="off", progress=False)


def test_every_output_carries_the_runs_provenance(tmp_path):
    from slimkern.zoo.eurosat_vit import WEIGHTS

    model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)
    data = np.random.default_rng(14).integers(1, 255, (4, 64, 100), dtype=np.uint8)
    path = write_raster(tmp_path / "s.tif", data, descriptions=("B", "G", "R", "N"))
    chip, _ = window(data, 0, 0, 64, None)
    prepared = model.prepare(chip[None], bands=["B", "G", "R", "N"])
    expected = json.loads(json.dumps(model.provenance(width=0.25, mode="ffn", prepared=prepared)))
    assert expected["checkpoint"]["sha256"] == file_sha256(WEIGHTS)
    assert expected["input"]["notes"] == ["dropped band(s) N: not used by vit_tiny_eurosat"]
    for name in ("emb.tif", "emb.parquet"):
        embed_scene(model, path, 0.25, out=tmp_path / name, mode="ffn", progress=False)
    with rasterio.open(tmp_path / "emb.tif") as src:  # a GDAL metadata item (gdalinfo shows it)
        cog = json.loads(src.tags()[TAG])
    parquet = json.loads(pq.read_schema(tmp_path / "emb.parquet").metadata[KEY])
    for metadata in (cog, parquet):
        assert metadata["provenance"] == expected
        assert metadata["scene"] == "s" and metadata["scene_bands"] == ["B", "G", "R", "N"]
        assert metadata["relative_flops"] == pytest.approx(model.relative_flops(0.25, mode="ffn"))
    assert {k: v for k, v in cog.items() if k not in ("job", "output_dtype")} == \
        {k: v for k, v in parquet.items() if k not in ("job", "output_dtype")}
