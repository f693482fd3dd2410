"""Pooled features of a data set at many widths, cached in chunks so that an interrupted sweep resumes.

Per batch the unslimmed stem runs once and only the blocks run per width
(:meth:`slimkern.SlimModel.run_widths`). Features are written per chunk of images (all widths in one
``.npz``, written atomically: temporary file, then rename), so a restart recomputes at most one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model import SlimModel
from .datasets import ImageSet, model_batches


def width_key(width: float) -> str:
    """The name of ``width`` in cache files and JSON (``repr`` of the float: exact and round-trippable)."""
    return repr(float(width))


def chunk_path(folder: Path, index: int) -> Path:
    return folder / f"chunk_{index:05d}.npz"


def extract_features(model: SlimModel, data: ImageSet, widths: Sequence[float], folder: str | Path, *,
                     mode: str = "attn+ffn", batch_size: int = 64, chunk_size: int = 512,
                     bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None,
                     units: str | None = None, progress: bool = True) -> dict[float, np.ndarray]:
    """Pooled features ``{width: [N, d] float32}`` of every image of ``data`` at every width.

    Chunks of ``chunk_size`` images already in ``folder`` (from an interrupted run) are reused; the
    caller makes sure they belong to the same model, data and widths (see :mod:`slimkern.analysis.sweep`).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    widths = [float(w) for w in widths]
    starts = range(0, len(data), chunk_size)
    bar = tqdm(total=len(data), desc="features", unit="img", disable=not progress)
    for index, start in enumerate(starts):
        path = chunk_path(folder, index)
        indices = range(start, min(start + chunk_size, len(data)))
        if path.exists():
            bar.update(len(indices))
            continue
        parts: dict[float, list[np.ndarray]] = {w: [] for w in widths}
        for batch in model_batches(data, model, batch_size, indices=indices, bands=bands, band_names=band_names,
                                   units=units):
            for width, out in model.run_widths(batch.x, widths, mode=mode, **batch.inputs).items():
                parts[width].append(out.float().cpu().numpy())
            bar.update(len(batch.x))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{width_key(w): np.concatenate(parts[w]) for w in widths})
        os.replace(tmp, path)
    bar.close()
    chunks = [np.load(chunk_path(folder, i)) for i in range(len(starts))]
    return {w: np.concatenate([chunk[width_key(w)] for chunk in chunks]) for w in widths}
