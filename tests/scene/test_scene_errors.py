"""Clear errors before any work for scenes and options that cannot be embedded, and none of them leaves output."""

import numpy as np
import pytest
import rasterio.shutil
from affine import Affine

from tests.scene.scenes import TRANSFORM, rgb_model, write_raster

pytest.importorskip("pyarrow", reason="the scene extra")
from slimkern.scene import SceneError, embed_scene  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return rgb_model()


def rgb(tmp_path, name="s.tif", **kwargs):
    data = np.random.default_rng(0).integers(1, 255, (3, 300, 300), dtype=np.uint8)
    return write_raster(tmp_path / name, data, descriptions=("R", "G", "B"), **kwargs)


def test_corrupt_file(tmp_path, model):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(5000))
    with pytest.raises(SceneError, match=r"cannot open .*corrupt\.tif as a raster"):
        embed_scene(model, path, out=tmp_path / "emb.tif", progress=False)
    assert not list(tmp_path.glob("emb*"))


def test_truncated_files(tmp_path, model):
    path = rgb(tmp_path, block=64)
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[:len(data) // 2])  # GDAL writes the directory last: the header is gone
    with pytest.raises(SceneError, match=r"cannot open .*truncated\.tif as a raster .*complete GeoTIFF"):
        embed_scene(model, truncated, out=tmp_path / "emb.tif", progress=False)
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(path, cog, driver="COG", BLOCKSIZE=64)  # directory first: it opens, tiles are missing
    data = cog.read_bytes()
    cog.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(SceneError, match=r"cog\.tif: reading rows \d+-\d+, columns \d+-\d+ failed .*truncated"):
        embed_scene(model, cog, out=tmp_path / "emb.tif", progress=False)
    assert not (tmp_path / "emb.tif").exists()


def test_scene_without_crs(tmp_path, model):
    path = rgb(tmp_path, crs=None)
    with pytest.raises(SceneError, match="has no CRS.*a_srs"):
        embed_scene(model, path, out=tmp_path / "emb.tif", progress=False)


def test_scene_without_geotransform(tmp_path, model):
    path = rgb(tmp_path, transform=Affine.identity())
    with pytest.raises(SceneError, match="no geotransform"):
        embed_scene(model, path, out=tmp_path / "emb.tif", progress=False)


def test_bands_that_do_not_match_the_model(tmp_path, model):
    four = np.random.default_rng(0).integers(1, 255, (4, 70, 70), dtype=np.uint8)
    unnamed = write_raster(tmp_path / "unnamed.tif", four)
    with pytest.raises(SceneError, match=r"4 unnamed bands but vit_tiny_eurosat expects 3 \(R, G, B\)"):
        embed_scene(model, unnamed, out=tmp_path / "a.tif", progress=False)
    with pytest.raises(SceneError, match=r"unnamed\.tif\): vit_tiny_eurosat: raw lacks bands this model needs: R, G, "
                                         r"B \(missing R, B\)\. Given: B01, B03, B09, B11"):
        embed_scene(model, unnamed, bands=["B01", "B03", "B09", "B11"], out=tmp_path / "b.tif", progress=False)
    with pytest.raises(SceneError, match="3 band names given .* a file with 4 bands"):
        embed_scene(model, unnamed, bands=["R", "G", "B"], out=tmp_path / "c.tif", progress=False)
    with pytest.raises(SceneError, match="band names must be unique"):
        embed_scene(model, unnamed, bands=["R", "G", "B", "B"], out=tmp_path / "d.tif", progress=False)
    assert not list(tmp_path.glob("[abcd].tif*"))


def test_per_band_files_on_other_grids(tmp_path, model):
    one = np.ones((1, 64, 64), np.uint8)
    r, g = write_raster(tmp_path / "r.tif", one), write_raster(tmp_path / "g.tif", one)
    with pytest.raises(SceneError, match="different CRSs"):
        embed_scene(model, {"R": r, "G": g, "B": write_raster(tmp_path / "b.tif", one, crs="EPSG:4326")},
                    out=tmp_path / "a.tif", progress=False)
    shifted = write_raster(tmp_path / "b2.tif", one, transform=Affine.translation(320, 0) @ TRANSFORM)
    with pytest.raises(SceneError, match="does not cover the scene's extent"):
        embed_scene(model, {"R": r, "G": g, "B": shifted}, out=tmp_path / "a.tif", progress=False)
    with pytest.raises(SceneError, match="per-band file for B has 3 bands"):
        embed_scene(model, {"R": r, "G": g, "B": rgb(tmp_path)}, out=tmp_path / "a.tif", progress=False)
    with pytest.raises(SceneError, match="scene file not found"):
        embed_scene(model, tmp_path / "missing.tif", out=tmp_path / "a.tif", progress=False)


@pytest.mark.parametrize("options, message", [
    (dict(stride=80), "stride 80 must be between 1 and the crop 64"),
    (dict(per="patch", stride=36), "multiple of the patch size 8"),
    (dict(per="pixel"), "per must be one of"),
    (dict(crop=60), "not a positive multiple of the patch size 8"),
    (dict(dtype="bfloat16"), "dtype must be one of float32, float16"),
    (dict(out="emb.png"), r"out must end in \.tif/\.tiff"),
    (dict(width=0.0), "width"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(units="dB"), "raw in 'dB' cannot be converted"),
    (dict(units="counts"), "units must be one of DN, reflectance"),
    (dict(add_offset=-1000, units="reflectance"), "add_offset applies to DN"),
    (dict(check="strict"), "check must be one of"),
    (dict(out="SCENE"), "is one of the scene's own files"),
])
def test_options_are_checked(tmp_path, model, options, message):
    path = rgb(tmp_path)
    options = {"out": tmp_path / "emb.tif", "progress": False, **options}
    if options["out"] == "SCENE":
        options["out"] = path
    with pytest.raises(ValueError, match=message):
        embed_scene(model, path, **options)
