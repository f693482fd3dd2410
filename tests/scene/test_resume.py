"""Resume: an interrupted job (exception, killed process) continues from its finished blocks and writes the same
bytes as an uninterrupted one; nothing carries the final name before it is complete; other jobs are refused."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.scene.scenes import rgb_model, write_raster

pytest.importorskip("pyarrow", reason="the scene extra")
from slimkern.scene import SceneError, embed_scene  # noqa: E402
from slimkern.scene.partial import PartialOutput  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return rgb_model()


def scene(tmp_path, size=(150, 200)):
    data = np.random.default_rng(7).integers(1, 255, (3, *size), dtype=np.uint8)
    data[:, :40, :90] = 0
    return write_raster(tmp_path / "scene.tif", data, nodata=0, descriptions=("R", "G", "B"))


@pytest.mark.parametrize("suffix, per", [(".tif", "patch"), (".parquet", "chip")])
def test_resume_after_an_error_writes_the_same_bytes(tmp_path, model, monkeypatch, suffix, per):
    path = scene(tmp_path)
    options = dict(per=per, stride=32, block=2, progress=False)
    whole = embed_scene(model, path, 0.5, out=tmp_path / f"whole{suffix}", **options)
    out = tmp_path / f"resumed{suffix}"
    save = PartialOutput.save_block
    calls = []

    def failing_save(self, name, **arrays):
        calls.append(name)
        if len(calls) > 3:
            raise OSError("disk full (simulated)")
        save(self, name, **arrays)

    monkeypatch.setattr(PartialOutput, "save_block", failing_save)
    with pytest.raises(OSError, match="simulated"):
        embed_scene(model, path, 0.5, out=out, **options)
    monkeypatch.undo()
    assert not out.exists()  # nothing under the final name until it is complete
    assert len(list((tmp_path / f"resumed{suffix}.partial" / "blocks").glob("*.npz"))) == 3
    resumed = embed_scene(model, path, 0.5, out=out, **options)
    assert resumed.resumed_blocks == 3
    assert resumed.embedded + resumed.skipped < whole.embedded + whole.skipped  # the finished blocks were not redone
    assert out.read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()
    assert not (tmp_path / f"resumed{suffix}.partial").exists()


KILLED_JOB = """
import sys, time, warnings
sys.path.insert(0, {root!r})
from slimkern.scene.partial import PartialOutput
from tests.scene.scenes import rgb_model
from slimkern.scene import embed_scene

save = PartialOutput.save_block
def slow_save(self, name, **arrays):  # slow enough to be killed in the middle
    save(self, name, **arrays)
    time.sleep(0.1)
PartialOutput.save_block = slow_save
embed_scene(rgb_model(), {scene!r}, 0.5, out={out!r}, per="chip", block=1, progress=False)
"""


def test_resume_after_a_killed_process_writes_the_same_bytes(tmp_path, model):
    path = scene(tmp_path, (192, 320))  # 15 chips of one block each
    out = tmp_path / "killed.tif"
    blocks = tmp_path / "killed.tif.partial" / "blocks"
    script = textwrap.dedent(KILLED_JOB.format(root=str(ROOT), scene=path, out=str(out)))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while len(list(blocks.glob("*.npz"))) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the job ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not out.exists()
    done = len(list(blocks.glob("*.npz")))
    assert 3 <= done < 15
    resumed = embed_scene(model, path, 0.5, out=out, per="chip", block=1, progress=False)
    assert resumed.resumed_blocks == done
    whole = tmp_path / "whole.tif"
    embed_scene(model, path, 0.5, out=whole, per="chip", block=1, progress=False)
    assert out.read_bytes() == whole.read_bytes()


def test_a_finished_output_is_kept_and_other_jobs_are_refused(tmp_path, model, monkeypatch):
    path = scene(tmp_path)
    out = tmp_path / "emb.parquet"
    embed_scene(model, path, 0.5, out=out, progress=False)
    again = embed_scene(model, path, 0.5, out=out, progress=False)
    assert again.already_done and again.embedded == 0
    with pytest.raises(ValueError, match="exists .*overwrite"):
        embed_scene(model, path, 0.25, out=out, progress=False)
    assert not embed_scene(model, path, 0.25, out=out, overwrite=True, progress=False).already_done

    other = tmp_path / "other.tif"
    save, saved = PartialOutput.save_block, []

    def failing_save(self, name, **arrays):
        if saved:
            raise OSError("stop")
        saved.append(name)
        save(self, name, **arrays)

    monkeypatch.setattr(PartialOutput, "save_block", failing_save)
    with pytest.raises(OSError):
        embed_scene(model, path, 0.5, out=other, block=1, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"unfinished job with other settings \(width differ\)"):
        embed_scene(model, path, 0.1, out=other, block=1, progress=False)
    assert embed_scene(model, path, 0.1, out=other, block=1, overwrite=True, progress=False).resumed_blocks == 0


def test_a_job_that_failed_before_its_first_block_is_replaced_by_the_next(tmp_path, model):
    path = scene(tmp_path)
    out = tmp_path / "emb.tif"
    with pytest.raises(SceneError, match="band medians .* beyond"):  # DN said to be reflectance: x 255 too large
        embed_scene(model, path, 0.5, out=out, units="reflectance", progress=False)
    assert (tmp_path / "emb.tif.partial" / "job.json").exists() and not out.exists()
    assert embed_scene(model, path, 0.5, out=out, progress=False).resumed_blocks == 0  # no --overwrite needed
