"""Run metadata written next to every embedding: which model, weights, width, input contract, precision and software.

One function, :func:`provenance` (also ``model.provenance(...)``), so that the CLI, the server, export, scene
embedding and training all record the same fields. The checkpoint hash is computed once, when
:func:`slimkern.load` reads the weights file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import SlimModel
    from .prepare import Prepared

_LIBRARIES = ("slimkern", "torch", "numpy", "timm", "triton")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Installed versions of slimkern and the libraries its numbers depend on (``None``: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(model: SlimModel, *, width: float | None = None, mode: str | None = None,
               prepared: Prepared | None = None) -> dict[str, Any]:
    """A JSON-ready record of how an embedding was made.

    ``input`` is what :meth:`~slimkern.SlimModel.prepare` did (bands, units, normalisation, notes) when
    ``prepared`` is given, else the contract the input was expected to follow (the model's spec).
    """
    spec = model.spec
    contract = {"bands": list(spec.bands), "unit": spec.unit, "scale": spec.scale, "offset": spec.offset,
                "normalization": spec.normalization, "mean": None if spec.mean is None else list(spec.mean),
                "std": None if spec.std is None else list(spec.std),
                "choices": {c.name: c.value for c in spec.choices}}
    return {
        "model": model.cfg.name,
        "checkpoint": {"name": model.checkpoint_name, "sha256": model.checkpoint_sha256},
        "width": width,
        "mode": mode,
        "input": prepared.describe() if prepared is not None else {"prepared": False, **contract},
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "backend": model.backend.name,
        "versions": dict(library_versions()),
    }
