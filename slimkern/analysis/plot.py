"""Plots of one or several sweep folders (matplotlib, Agg backend; PNG and SVG).

Per probe, ``{probe}_vs_compute.png/.svg``: the metric (left) and the retention metric(s) / metric(1.0)
(right) against relative compute on a log axis, one line per folder (the mean over seeds) with the
min-max range over seeds shaded. ``redundancy_vs_compute.png/.svg``: the three redundancy measures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .sweep import SUMMARY

METRIC_LABELS = {"macro_accuracy": "macro accuracy", "macro_mAP": "macro mAP"}
PROBE_LABELS = {"knn": "k-NN (k = 5)", "linear": "linear probe"}
REDUNDANCY = (("mean_abs_correlation", "mean |feature correlation|"),
              ("explained_variance_slope", "slope of log10 explained-variance ratio"),
              ("participation_ratio", "effective dimensionality (participation ratio)"))


def _read_summaries(folders: Sequence[str | Path]) -> list[dict]:
    summaries = []
    for folder in folders:
        path = Path(folder) / SUMMARY
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give folders written by `slimkern sweep`")
        summaries.append(json.loads(path.read_text()))
    return summaries


def _labels(summaries: list[dict], names: Sequence[str] | None = None) -> list[str]:
    """``names`` (one per folder), else model names with the data set (and mode) added where they differ."""
    if names is not None:
        if len(names) != len(summaries):
            raise ValueError(f"{len(names)} legend names for {len(summaries)} folders; give one name per folder")
        return list(names)
    labels = [s["model"] for s in summaries]
    for key in ("dataset", "mode"):
        if len({s[key] for s in summaries}) > 1:
            labels = [f"{label}, {s[key]}" for label, s in zip(labels, summaries, strict=True)]
    if len(set(labels)) < len(labels):  # same model and data twice: number them
        labels = [f"{label} [{i + 1}]" for i, label in enumerate(labels)]
    return labels


def _percent_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5 labels: readable in %
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g} %"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def plot_folders(folders: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write the plots of the sweeps in ``folders`` into ``out`` (legend: ``names``, one per folder, else the
    model names); returns the written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = _read_summaries(folders)
    labels = _labels(summaries, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = ", ".join(sorted({s["dataset"] for s in summaries}))
    written = []
    probes = [p for p in ("knn", "linear") if any(p in s["probes"] for s in summaries)]
    for probe in probes:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
        metric_names = {METRIC_LABELS[s["metric"]] for s in summaries if probe in s["probes"]}
        for summary, label in zip(summaries, labels, strict=True):
            rows = summary["probes"].get(probe)
            if not rows:
                continue
            x = [r["relative_flops"] for r in rows]
            for ax, key in zip(axes, ("metric", "retention"), strict=True):
                line, = ax.plot(x, [r[f"{key}_mean"] for r in rows], marker="o", markersize=3, label=label)
                ax.fill_between(x, [r[f"{key}_min"] for r in rows], [r[f"{key}_max"] for r in rows],
                                color=line.get_color(), alpha=0.2, linewidth=0)
        axes[0].set_ylabel(" / ".join(sorted(metric_names)))
        axes[1].set_ylabel("retention = metric(s) / metric(1.0)")
        axes[1].axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
        for ax, what in zip(axes, ("metric", "retention"), strict=True):
            _percent_axis(ax)
            ax.set_xlabel("relative compute FLOPs(s) / FLOPs(1.0) (log scale)")
            ax.set_title(f"{PROBE_LABELS[probe]} {what} vs compute")
            ax.legend(title="mean over seeds; band = min-max", fontsize=8, title_fontsize=8, loc="lower right")
        fig.suptitle(f"Width sweep on {datasets}")
        written += _save(fig, out / f"{probe}_vs_compute")
        plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for summary, label in zip(summaries, labels, strict=True):
        rows = summary["redundancy"]
        x = [r["relative_flops"] for r in rows]
        for ax, (key, _) in zip(axes, REDUNDANCY, strict=True):
            ax.plot(x, [r[key] for r in rows], marker="o", markersize=3, label=label)
    for ax, (_, name) in zip(axes, REDUNDANCY, strict=True):
        _percent_axis(ax)
        ax.set_xlabel("relative compute (log scale)")
        ax.set_ylabel(name)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"Redundancy of the pooled features on {datasets}")
    written += _save(fig, out / "redundancy_vs_compute")
    plt.close(fig)
    return written


def _save(fig, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths
