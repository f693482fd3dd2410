"""Result files in the paper's layout, plus a JSON summary.

- ``model_flops.csv``: ``model, scale, flops_SASF, flops_SA, flops_SF``: FLOPs per image (2 x
  multiply-add, matmuls, stem included; :meth:`slimkern.SlimModel.flops`) at the model's input size when
  slimming attention and FFN (SASF), attention only (SA) or the FFN only (SF).
- ``{probe}_scores_{n}way_{dataset}.csv``: ``scale, metric, seed``, one row per width and seed.
- ``summary.json``: per probe and width the mean, std, min and max of the metric over seeds, the
  retention metric(s) / metric(1.0) (per seed on the same split, then mean, std, min, max) and the
  relative compute; per width the redundancy measures.

Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

#: The sweep's summary file, which ``slimkern plot`` reads back.
SUMMARY = "summary.json"
SCORE_COLUMNS = ("scale", "metric", "seed")
FLOPS_COLUMNS = ("model", "scale", "flops_SASF", "flops_SA", "flops_SF")
MODE_COLUMNS = {"attn+ffn": "flops_SASF", "attn": "flops_SA", "ffn": "flops_SF"}


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def _csv_text(columns: tuple[str, ...], rows: Iterable[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row[c] for c in columns} for row in rows)
    return buf.getvalue()


def scores_filename(probe: str, num_classes: int, dataset: str) -> str:
    """``knn_scores_10way_eurosat-rgb.csv``: the paper's per-task file name."""
    return f"{probe}_scores_{num_classes}way_{dataset}.csv"


def write_scores(path: str | Path, scores: Mapping[float, Mapping[int, float]]) -> None:
    """``scores[width][seed] = metric`` -> CSV ``scale, metric, seed``, sorted by scale, then seed."""
    rows = [{"scale": repr(float(w)), "metric": repr(float(scores[w][s])), "seed": int(s)}
            for w in sorted(scores) for s in sorted(scores[w])]
    write_text(path, _csv_text(SCORE_COLUMNS, rows))


def read_scores(path: str | Path) -> dict[float, dict[int, float]]:
    """The inverse of :func:`write_scores`."""
    scores: dict[float, dict[int, float]] = {}
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != SCORE_COLUMNS:
            raise ValueError(f"{path}: expected columns {', '.join(SCORE_COLUMNS)}, got {reader.fieldnames}")
        for row in reader:
            scores.setdefault(float(row["scale"]), {})[int(row["seed"])] = float(row["metric"])
    return scores


def write_model_flops(path: str | Path, model_name: str, flops: Mapping[float, Mapping[str, int]]) -> None:
    """``flops[width][mode]`` (modes ``attn+ffn``, ``attn``, ``ffn``) -> ``model_flops.csv``."""
    rows = [{"model": model_name, "scale": repr(float(w)),
             **{MODE_COLUMNS[mode]: int(value) for mode, value in flops[w].items()}} for w in sorted(flops)]
    write_text(path, _csv_text(FLOPS_COLUMNS, rows))
