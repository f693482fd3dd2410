"""The width sweep: features at every width, probes per width and seed, redundancy, result files, plots.

An output folder holds one sweep: ``features/`` (cached chunks), ``progress.json`` (what is done), the
result files of :mod:`slimkern.analysis.results` and the plots. Running the same sweep again on the
folder resumes it: finished feature chunks, probe scores and redundancy measures are kept; more
probes or seeds may be added later. A folder that holds a sweep of another model, data set (images,
labels or split), width list or mode is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model import SlimModel
from ..plan import MODES, check_mode, check_width
from . import results
from .datasets import ImageSet
from .features import extract_features, width_key
from .probes import PROBES, probe_metric
from .redundancy import redundancy_measures

PROGRESS = "progress.json"
SUMMARY = "summary.json"


def fingerprint(model: SlimModel, weights: str, data: ImageSet, widths: Sequence[float], mode: str,
                bands: Sequence[int] | None, band_names: Sequence[str] | None, units: str | None) -> dict:
    """What the cached features and finished scores depend on; a resumed sweep must match it."""
    items = hashlib.sha256("\n".join(data.items).encode()).hexdigest()[:16]
    # the finished probe scores depend on the labels and split too (an edited multi-label list keeps the items)
    labels = hashlib.sha256(json.dumps([list(data.classes), np.asarray(data.labels).tolist(),
                                        None if data.test_mask is None else np.asarray(data.test_mask).tolist()]
                                       ).encode()).hexdigest()[:16]
    return {"model": model.cfg.name, "weights": weights, "dataset": data.name, "num_images": len(data),
            "items_sha256": items, "labels_sha256": labels, "widths": [width_key(w) for w in widths], "mode": mode,
            "bands": None if bands is None else list(bands),
            "band_names": list(band_names or data.bands or []) or None, "units": units,
            "choices": {c.name: c.value for c in model.spec.choices}}


def _load_progress(out: Path, expected: dict) -> dict:
    path = out / PROGRESS
    if not path.exists():
        return {"fingerprint": expected, "scores": {}, "redundancy": {}}
    progress = json.loads(path.read_text())
    if progress.get("fingerprint") != expected:
        old = progress.get("fingerprint", {})
        diff = sorted(k for k in set(old) | set(expected) if old.get(k) != expected.get(k))
        raise ValueError(f"{out} holds a different sweep (differs in: {', '.join(diff)}); "
                         "use another --out folder or delete this one")
    return progress


def run_sweep(model: SlimModel, data: ImageSet, out: str | Path, *, widths: Sequence[float], mode: str = "attn+ffn",
              probes: Sequence[str] = ("knn",), seeds: int = 5, weights: str = "", batch_size: int = 64,
              bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None, units: str | None = None,
              plot: bool = True, progress: bool = True) -> dict:
    """Run (or resume) the sweep of ``model`` on ``data`` into ``out``; returns the summary (also ``summary.json``).

    Args:
        widths: slimming factors; 1.0 is added if missing (retention is relative to it).
        mode: ``"attn+ffn"``, ``"attn"`` or ``"ffn"`` (which sublayers are slimmed).
        probes: ``"knn"`` and/or ``"linear"`` (see :mod:`slimkern.analysis.probes`).
        seeds: seeds ``0 .. seeds-1`` of the train/test split and the probe.
        weights: the checkpoint's name, recorded in the results (``""`` = random weights).
        bands, band_names, units: band selection, names and units of the stored images
            (see :func:`~slimkern.analysis.datasets.model_batches`).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    check_mode(mode)
    widths = sorted({check_width(w) for w in widths} | {1.0})
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes:
        raise ValueError(f"unknown probe(s) {unknown}; expected one or more of {', '.join(PROBES)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(model, weights, data, widths, mode, bands, band_names, units)
    state = _load_progress(out, expected)
    results.write_json(out / PROGRESS, state)  # before any feature chunk: a restart must match these inputs
    provenance = model.provenance(mode=mode)
    provenance["input"].update(prepared=True, band_indices=expected["bands"], band_names=expected["band_names"],
                               units=units or model.spec.unit)
    (out / "features").mkdir(exist_ok=True)
    results.write_json(out / "features" / "provenance.json", {**provenance, "widths": widths})

    features = extract_features(model, data, widths, out / "features", mode=mode, batch_size=batch_size,
                                bands=bands, band_names=band_names, units=units, progress=progress)
    feature_seconds = time.perf_counter() - started

    todo = [(p, w, s) for p in probes for w in widths for s in range(seeds)
            if str(s) not in state["scores"].get(p, {}).get(width_key(w), {})]
    for probe, width, seed in tqdm(todo, desc="probes", unit="fit", disable=not progress):
        metric = probe_metric(probe, features[width], data.labels, seed, data.test_mask)
        state["scores"].setdefault(probe, {}).setdefault(width_key(width), {})[str(seed)] = metric
        results.write_json(out / PROGRESS, state)
    for width in widths:
        if width_key(width) not in state["redundancy"]:
            state["redundancy"][width_key(width)] = redundancy_measures(features[width])
    results.write_json(out / PROGRESS, state)

    summary = _summarise(model, data, state, widths, mode, probes, seeds, weights)
    summary["provenance"] = provenance
    summary["seconds"] = {"features": round(feature_seconds, 1), "total": round(time.perf_counter() - started, 1),
                          "note": "this invocation only (a resumed sweep reuses cached work)"}
    _write_results(out, model, data, state, widths, probes, seeds, summary)
    if plot:
        from .plot import plot_folders

        plot_folders([out], out)
    return summary


def _summarise(model: SlimModel, data: ImageSet, state: dict, widths: list[float], mode: str,
               probes: Sequence[str], seeds: int, weights: str) -> dict:
    size = model.cfg.arch.img_size
    full = model.flops(1.0, mode=mode)
    per_probe = {}
    for probe in probes:
        table = state["scores"][probe]
        reference = np.array([table[width_key(1.0)][str(s)] for s in range(seeds)])
        rows = []
        for width in widths:
            metric = np.array([table[width_key(width)][str(s)] for s in range(seeds)])
            retention = metric / reference
            rows.append({"width": width, "relative_flops": model.relative_flops(width, mode=mode),
                         **_stats("metric", metric), **_stats("retention", retention)})
        per_probe[probe] = rows
    return {
        "model": model.cfg.name, "weights": weights or "random (no checkpoint)", "dataset": data.name,
        "num_images": len(data), "num_classes": len(data.classes), "classes": list(data.classes),
        "multilabel": data.multilabel, "metric": "macro_mAP" if data.multilabel else "macro_accuracy",
        "mode": mode, "seeds": list(range(seeds)), "image_size": size, "flops_full": full,
        "split": "the data set's own train/test split" if data.test_mask is not None
        else "stratified 80/20 per seed" if not data.multilabel else "random 80/20 per seed",
        "spread": "std, min and max over seeds",
        "probes": per_probe,
        "redundancy": [{"width": w, "relative_flops": model.relative_flops(w, mode=mode),
                        **state["redundancy"][width_key(w)]} for w in widths],
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _stats(name: str, values: np.ndarray) -> dict:
    return {f"{name}_mean": float(values.mean()), f"{name}_std": float(values.std()),
            f"{name}_min": float(values.min()), f"{name}_max": float(values.max())}


def _write_results(out: Path, model: SlimModel, data: ImageSet, state: dict, widths: list[float],
                   probes: Sequence[str], seeds: int, summary: dict) -> None:
    flops = {w: {m: model.flops(w, mode=m) for m in MODES} for w in widths}
    results.write_model_flops(out / "model_flops.csv", model.cfg.name, flops)
    for probe in probes:
        table = state["scores"][probe]
        scores = {w: {s: table[width_key(w)][str(s)] for s in range(seeds)} for w in widths}
        results.write_scores(out / results.scores_filename(probe, len(data.classes), data.name), scores)
    results.write_json(out / SUMMARY, summary)
