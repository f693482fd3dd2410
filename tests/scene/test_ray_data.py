"""Many scenes on Ray Data: a local cluster, two actors with one model each, two scenes; the outputs equal the
local path's."""

import numpy as np
import pytest
import rasterio

from tests.scene.scenes import rgb_model, write_raster

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data", reason="Ray Data needs pyarrow")
pytest.importorskip("pyarrow", reason="the scene extra")
from slimkern.scene import embed_scene, embed_scenes_ray  # noqa: E402

ARCH = {"depth": 2, "dim": 64, "num_heads": 2}  # rgb_model()'s architecture, random weights on both sides


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        yield
    finally:
        ray.shutdown()


def test_two_scenes_on_two_actors_equal_the_local_path(tmp_path, cluster):
    scenes = []
    for i, size in enumerate([(100, 130), (70, 150)]):
        data = np.random.default_rng(i).integers(1, 255, (3, *size), dtype=np.uint8)
        data[:, :20, :20] = 0
        path = write_raster(tmp_path / f"scene{i}.tif", data, nodata=0, descriptions=("R", "G", "B"))
        scenes.append({"id": f"scene{i}", "source": path})
    records = embed_scenes_ray("vit_tiny_eurosat", scenes, str(tmp_path / "ray" / "{scene}.tif"), arch=ARCH,
                               device="cpu", concurrency=2, num_cpus=1, width=0.25, per="patch", stride=32)
    assert sorted(r["scene"] for r in records) == ["scene0", "scene1"]
    assert all(r["embedded"] > 0 for r in records)
    model = rgb_model()
    for scene in scenes:
        local = tmp_path / f"local_{scene['id']}.tif"
        embed_scene(model, scene["source"], 0.25, out=local, per="patch", stride=32, progress=False)
        with rasterio.open(local) as a, rasterio.open(tmp_path / "ray" / f"{scene['id']}.tif") as b:
            assert a.transform == b.transform and a.crs == b.crs
            # actors run torch on one thread, this process on two: the last float bits may differ
            np.testing.assert_allclose(b.read(), a.read(), rtol=1e-5, atol=1e-6)
