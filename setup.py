"""Packaging lives in pyproject.toml; this file adds the CUDA kernel sources to the package and the optional
ahead-of-time build of the CUDA extension (csrc/).

Wheels carry ``csrc/`` as ``slimkern/csrc/`` (see :class:`BuildPyWithKernels`), so that an install from a wheel can
JIT-build the ``cuda`` backend too; an sdist carries ``csrc/`` itself (MANIFEST.in).

The default install is pure Python: the ``cuda`` backend then JIT-builds its extension with ninja on first use
(cached; see slimkern/backends/cuda/build.py). To compile it ahead of time into ``slimkern._cuda_kernels``
(torch and the CUDA toolkit must be importable by the build, hence no build isolation)::

    SLIMKERN_BUILD_CUDA=1 pip install --no-build-isolation .
    SLIMKERN_BUILD_CUDA=1 python setup.py build_ext --inplace     # in a checkout
"""

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SUFFIXES = (".cu", ".cuh", ".cpp", ".h", ".md")


class BuildPyWithKernels(build_py):
    """build_py that also copies the kernel sources of csrc/ into the built package as slimkern/csrc/."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "csrc"
        target = Path(self.build_lib) / "slimkern" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.suffix in KERNEL_SUFFIXES:
                shutil.copy2(path, target / path.name)


def cuda_extension() -> dict:
    """setup() arguments for the ahead-of-time build, or none unless SLIMKERN_BUILD_CUDA=1."""
    if os.environ.get("SLIMKERN_BUILD_CUDA") != "1":
        return {"cmdclass": {"build_py": BuildPyWithKernels}}
    # the same sources, flags and toolkit lookup as the JIT build (build.py imports only torch)
    spec = importlib.util.spec_from_file_location("_build", Path(__file__).parent / "slimkern/backends/cuda/build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    home = build.find_cuda_home()
    if home is None:
        raise RuntimeError("SLIMKERN_BUILD_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
    os.environ.setdefault("CUDA_HOME", str(home))
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]  # read once at its import, which may have come earlier
    csrc = Path("csrc")
    ext = cpp_extension.CUDAExtension(
        name=build.AOT_MODULE,
        sources=[str(csrc / name) for name in build.SOURCES],
        include_dirs=[str(csrc.resolve())],
        library_dirs=[str(build.cuda_lib_dir(home))],
        extra_compile_args={"cxx": ["-O3"], "nvcc": list(build.NVCC_FLAGS)},
    )
    return {"ext_modules": [ext],
            "cmdclass": {"build_py": BuildPyWithKernels, "build_ext": cpp_extension.BuildExtension}}


setup(**cuda_extension())
