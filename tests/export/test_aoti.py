"""AOTInductor: the C++ example embeds a real EuroSAT image with an exported package (CI), every family compiles
and equals run() (opt-in: SLIMKERN_TEST_EXPORT_ALL=1, one to a few minutes per compile on 2 cores).

In CI the AOTInductor path runs once, on the shipped vit_tiny_eurosat through ``slimkern export`` (the compile is
most of this file's time); the other families' AOTInductor exports run in the opt-in test below.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import slimkern
from slimkern.cli import main
from slimkern.export import read_metadata
from slimkern.provenance import file_sha256
from slimkern.zoo.eurosat_vit import WEIGHTS
from tests.export.cases import CONSTANTS, FAMILIES, ODD_WIDTH, tiny
from tests.helpers import rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = os.path.join(ROOT, "slimkern", "data", "eurosat_sample", "Forest_1.jpg")
EXPORT_ALL = os.environ.get("SLIMKERN_TEST_EXPORT_ALL") == "1"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """vit_tiny_eurosat at width 0.25 as an AOTInductor package, through the command line."""
    path = tmp_path_factory.mktemp("aoti") / "vit_tiny_eurosat.pt2"
    assert main(["export", "vit_tiny_eurosat", "--weights", str(WEIGHTS), "--width", "0.25", "--format", "aoti",
                 "--out", str(path), "--quiet"]) == 0
    return path


def test_aoti_package_metadata(package):
    meta = read_metadata(package)
    assert meta["format"] == "aoti" and meta["model"] == "vit_tiny_eurosat" and meta["width"] == "0.25"
    assert meta["checkpoint_sha256"] == file_sha256(WEIGHTS)
    assert not any(key.startswith("AOTI_") for key in meta)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """examples/cpp/embed_image.cpp built against the installed torch (seconds; into a temporary folder)."""
    if shutil.which("g++") is None:
        pytest.skip("needs a C++ compiler (g++)")
    path = tmp_path_factory.mktemp("cpp") / "embed_image"
    subprocess.run(["bash", os.path.join(ROOT, "examples", "cpp", "build.sh"), str(path), sys.executable],
                   check=True, timeout=600)
    return path


def test_cpp_example_embeds_an_image(package, binary, tmp_path):
    pixels = np.asarray(Image.open(IMAGE).convert("RGB"))
    Image.fromarray(pixels).save(tmp_path / "image.ppm")
    done = subprocess.run([str(binary), str(package), str(tmp_path / "image.ppm")], capture_output=True, text=True,
                          timeout=120, check=True)
    got = torch.tensor([float(v) for v in done.stdout.split()])
    assert "vit_tiny_eurosat width 0.25" in done.stderr
    model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    want = model.run(model.normalize(x), 0.25)[0]
    assert got.shape == want.shape and rel_error(got, want) <= 1e-5


def test_cpp_example_refuses_a_wrong_image_size(package, binary, tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "small.ppm")
    done = subprocess.run([str(binary), str(package), str(tmp_path / "small.ppm")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "the image is 32x32, the export takes [64, 64]" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not EXPORT_ALL, reason="AOTInductor compiles of every family: set SLIMKERN_TEST_EXPORT_ALL=1")
@pytest.mark.parametrize("width", [1.0, ODD_WIDTH])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_aoti(name, width, tmp_path):
    result = slimkern.export(tiny(name), width, tmp_path / f"{name}.pt2", format="aoti",
                             constants=CONSTANTS.get(name))
    assert max(result.errors.values()) <= 1e-5
    assert read_metadata(result.path) == result.metadata
    print(f"{name} width {width}: compile and write {result.seconds['compile and write']:.0f} s")
