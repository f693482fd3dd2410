"""What a wheel and an sdist carry (issue 13 items 11, 15): the CUDA kernel sources (so that an install from a wheel
can JIT-build the cuda backend, and finds them) and the LICENSE. Built from a copy of the checkout, so the
checkout gets no build/ or egg-info folders; `pip wheel --no-deps --no-build-isolation` takes a few seconds."""

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_FILES = ("binding.cpp", "sliced_linear.cu", "attention.cu", "layer_norm.cu", "launch.h", "common.cuh")


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    copy = tmp_path_factory.mktemp("src") / "slimkern"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".benchmarks", "runs",
                                                                "results"))
    return copy


def test_the_wheel_carries_the_kernel_sources_and_the_license(source_copy, tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(tmp_path), str(source_copy)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("slimkern-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for kernel in KERNEL_FILES:
        assert f"slimkern/csrc/{kernel}" in names, kernel
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names

    # the installed layout: the cuda backend's build finds the sources inside the package
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    spec = importlib.util.spec_from_file_location("_build", tmp_path / "site/slimkern/backends/cuda/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.csrc_dir() == (tmp_path / "site/slimkern/csrc").resolve()


def test_the_sdist_carries_the_kernel_sources_and_the_license(source_copy, tmp_path):
    build = f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", build], cwd=source_copy, check=True, timeout=300, capture_output=True)
    (sdist,) = tmp_path.glob("slimkern-*.tar.gz")
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    assert {f"csrc/{kernel}" for kernel in KERNEL_FILES} <= names and "LICENSE" in names


def test_license_is_the_apache_license_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
