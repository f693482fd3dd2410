"""Build and load the CUDA extension (``csrc/``): ahead of time from ``setup.py``, or JIT with ninja on first use.

Nothing here runs at import. :func:`extension` returns the loaded module (building it once, cached on disk under
a key of the source hash) or raises :class:`ExtensionUnavailable` with the reason: no GPU, no CUDA toolkit
(nvcc), no ``csrc/`` sources, or a failed build (with the path of the build log). :func:`unavailable_reason`
answers the same question without building.

Environment: ``SLIMKERN_CUDA_CACHE`` (build folder root, default ``~/.cache/slimkern/cuda``), ``CUDA_HOME``
(the toolkit; otherwise found from nvcc on the PATH or ``/usr/local/cuda*``), ``MAX_JOBS`` (ninja jobs),
``TORCH_CUDA_ARCH_LIST`` (target GPUs; default: the GPUs present).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch

#: The ahead-of-time build's module (``SLIMKERN_BUILD_CUDA=1 pip install .``); used when present.
AOT_MODULE = "slimkern._cuda_kernels"
SOURCES = ("binding.cpp", "sliced_linear.cu", "attention.cu", "layer_norm.cu")
HEADERS = ("launch.h", "common.cuh")
# no -std flag: torch adds the C++ standard its own headers need (C++20 in recent releases)
NVCC_FLAGS = ("-O3", "--expt-relaxed-constexpr", "-lineinfo")


class ExtensionUnavailable(RuntimeError):
    """The CUDA extension cannot be loaded here; the message says why."""


def csrc_dir() -> Path | None:
    """The kernel sources: the csrc folder a wheel installs inside the package, else ``csrc/`` of the checkout (or
    of an unpacked sdist) next to the package."""
    package = Path(__file__).resolve().parents[2]
    for root in (package / "csrc", package.parent / "csrc"):
        if all((root / name).is_file() for name in SOURCES + HEADERS):
            return root
    return None


def source_hash(root: Path) -> str:
    """Hash of every source and header and of the flags: a change of any of them builds a new module."""
    digest = hashlib.sha256(" ".join(NVCC_FLAGS).encode())
    for name in SOURCES + HEADERS:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def find_cuda_home() -> Path | None:
    """The CUDA toolkit folder (with ``bin/nvcc``): ``$CUDA_HOME``/``$CUDA_PATH``, nvcc's folder, ``/usr/local/cuda*``.

    torch's own guess takes the parent of nvcc's folder, which is wrong when nvcc on the PATH is a wrapper script
    (``/usr/local/bin/nvcc``): the toolkit is the folder that also has ``include/cuda_runtime.h``.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    candidates += ["/usr/local/cuda", *sorted((str(p) for p in Path("/usr/local").glob("cuda-*")), reverse=True)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file() \
                and (Path(candidate) / "include" / "cuda_runtime.h").is_file():
            return Path(candidate)
    return None


def cuda_lib_dir(home: Path) -> Path:
    """The toolkit's library folder: ``lib64`` where it holds libcudart, else ``lib`` (CUDA 13 packages)."""
    return home / "lib64" if (home / "lib64" / "libcudart.so").exists() else home / "lib"


def cache_root() -> Path:
    return Path(os.environ.get("SLIMKERN_CUDA_CACHE", Path.home() / ".cache" / "slimkern" / "cuda"))


def unavailable_reason() -> str | None:
    """Why the extension cannot be used in this process, without building anything (``None``: it can be)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if _aot_module() is not None:
        return None
    if csrc_dir() is None:
        return "the CUDA sources (csrc/) are not installed; build ahead of time with SLIMKERN_BUILD_CUDA=1"
    if find_cuda_home() is None:
        return "no CUDA toolkit (nvcc not found: set CUDA_HOME) to build the extension"
    return _build_error


_build_error: str | None = None


@functools.cache
def _aot_module() -> ModuleType | None:
    try:
        return importlib.import_module(AOT_MODULE)
    except ImportError:
        return None


@functools.cache
def jit_build() -> ModuleType:
    """JIT-build (or load the cached build of) the extension with ninja; needs the toolkit, not a GPU.

    Targets ``TORCH_CUDA_ARCH_LIST`` or the GPUs present. Raises :class:`ExtensionUnavailable` with the log path.
    """
    from torch.utils import cpp_extension

    root, home = csrc_dir(), find_cuda_home()
    name = f"slimkern_cuda_{source_hash(root)}"
    build_dir = cache_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # torch reads the toolkit location once, at import of cpp_extension; point it at the folder found above
    os.environ.setdefault("CUDA_HOME", str(home))
    cpp_extension.CUDA_HOME = str(home)
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(root / s) for s in SOURCES],
            extra_cflags=["-O3"],
            extra_cuda_cflags=list(NVCC_FLAGS),
            extra_ldflags=[f"-L{cuda_lib_dir(home)}"],
            extra_include_paths=[str(root)],
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # compiler output is in the message: keep it next to the build
        log = build_dir / "build.log"
        log.write_text(f"{type(exc).__name__}: {exc}\n")
        raise ExtensionUnavailable(f"the CUDA extension failed to build (log: {log})") from exc


_loaded: ModuleType | None = None


def extension() -> ModuleType:
    """The loaded extension module; builds it on first use (JIT, cached on disk) when no AOT build is installed.

    Every op calls this: once loaded, the module is returned without any further lookup.

    Raises:
        ExtensionUnavailable: with the reason (no GPU, no toolkit, no sources, or the build failed: log path).
    """
    global _build_error, _loaded
    if _loaded is not None:
        return _loaded
    why = unavailable_reason()
    if why:
        raise ExtensionUnavailable(why)
    try:
        _loaded = _aot_module() or jit_build()
    except ExtensionUnavailable as exc:
        _build_error = str(exc)
        raise
    return _loaded
