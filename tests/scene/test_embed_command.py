"""``slimkern embed``: scene lists (text, JSON, STAC-like items, BAND=path), output templates, errors."""

import json

import numpy as np
import pytest

from slimkern.cli import main
from tests.scene.scenes import write_raster

gpd = pytest.importorskip("geopandas")
pytest.importorskip("pyarrow", reason="the scene extra")
from slimkern.scene.catalog import expand_scenes  # noqa: E402


def rgb_files(tmp_path, stem):
    data = np.random.default_rng(len(stem)).integers(1, 255, (3, 100, 130), dtype=np.uint8)
    return {band: write_raster(tmp_path / f"{stem}_{band}.tif", data[i:i + 1]) for i, band in enumerate("RGB")}


def test_embed_a_list_of_scenes_with_the_shipped_model(tmp_path, capsys):
    data = np.random.default_rng(0).integers(1, 255, (3, 100, 130), dtype=np.uint8)
    write_raster(tmp_path / "alpha.tif", data, descriptions=("R", "G", "B"))
    (tmp_path / "scenes.txt").write_text("# scenes\nalpha.tif\n")
    beta = rgb_files(tmp_path, "beta")
    item = {"id": "beta", "assets": {
        **{f"band_{b}": {"href": f"beta_{b}.tif", "eo:bands": [{"name": b}]} for b in beta},
        "thumbnail": {"href": "beta.png"}}}
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    code = main(["embed", "vit_tiny_eurosat", str(tmp_path / "scenes.txt"), str(tmp_path / "items.json"),
                 "--out", str(tmp_path / "out" / "{scene}.parquet"), "--width", "0.1", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "alpha: 6 chips embedded" in printed and "beta: 6 chips embedded" in printed and "chips/s" in printed
    for scene in ("alpha", "beta"):
        df = gpd.read_parquet(tmp_path / "out" / f"{scene}.parquet")
        assert len(df) == 6 and set(df.scene) == {scene} and df.width.iloc[0] == 0.1
    again = main(["embed", "vit_tiny_eurosat", str(tmp_path / "alpha.tif"), "--out",
                  str(tmp_path / "out" / "{scene}.parquet"), "--width", "0.1", "--quiet"])
    assert again == 0 and "already complete" in capsys.readouterr().out


def test_scene_arguments(tmp_path):
    files = rgb_files(tmp_path, "gamma")
    (scene,) = expand_scenes([",".join(f"{b}={p}" for b, p in files.items())])
    assert scene == {"id": "gamma", "source": files}
    (tmp_path / "list.json").write_text(json.dumps(["a.tif", {"id": "b", "path": "/data/b.tif"},
                                                    {"id": "c", "bands": {"R": "r.tif"}}]))
    scenes = expand_scenes([str(tmp_path / "list.json")])
    assert scenes == [{"id": "a", "source": str(tmp_path / "a.tif")}, {"id": "b", "source": "/data/b.tif"},
                      {"id": "c", "source": {"R": str(tmp_path / "r.tif")}}]


@pytest.mark.parametrize("arguments, message", [
    (["noCRS.tif"], "noCRS.tif has no CRS"),
    (["a.tif", "b.tif"], "several scenes need a template with {scene}"),
    (["a.tif", "x/a.tif"], "scene ids must be unique"),
    (["R=r.tif,G"], "expected BAND=path,BAND=path"),
    (["list.json"], "expected a JSON list of scenes"),
    (["rgb.tif", "--units", "reflectance"], "band medians R "),
    (["rgb.tif", "--band-names", "B01,B09,B10"], "raw lacks bands this model needs"),
])
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    write_raster(tmp_path / "noCRS.tif", np.ones((3, 70, 70), np.uint8), crs=None)
    (tmp_path / "list.json").write_text("{}")
    write_raster(tmp_path / "rgb.tif", np.full((3, 70, 70), 90, np.uint8) + np.eye(70, dtype=np.uint8),
                 descriptions=("R", "G", "B"))
    assert main(["embed", "vit_tiny_eurosat", *arguments, "--out", "emb.tif", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimkern embed: error: ") and message in err and err.count("\n") == 1
