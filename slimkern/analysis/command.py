"""``slimkern sweep`` and ``slimkern plot`` (the arguments are defined in :mod:`slimkern.cli`).

Without a model name, weights or data, ``slimkern sweep`` is the built-in demo: the shipped
``vit_tiny_eurosat`` weights on the shipped EuroSAT sweep sample (held-out images only).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import slimkern

from ..samples import DATA_DIR
from ..zoo.eurosat_vit import WEIGHTS

DEMO_MODEL = "vit_tiny_eurosat"
DEMO_DATA = DATA_DIR / "eurosat_sweep"
PROBE_CHOICES = {"knn": ("knn",), "linear": ("linear",), "both": ("knn", "linear")}


def sweep_command(args: argparse.Namespace) -> int:
    from .datasets import class_folder_dataset, geobench_dataset, multilabel_dataset
    from .sweep import run_sweep

    name = args.name or DEMO_MODEL
    weights, weights_label = args.weights, str(args.weights or "")
    if weights is None and name == DEMO_MODEL:
        # recorded by name, not by this machine's install path, so results from two machines compare
        weights, weights_label = WEIGHTS, f"{WEIGHTS.name} (shipped with slimkern)"
    if args.geobench:
        if args.data or args.labels:
            raise ValueError("give either --geobench TASK or --data DIR (with --labels FILE), not both")
        data = geobench_dataset(args.geobench, band_names=args.geobench_bands.split(",") if args.geobench_bands
                                else None)
    elif args.labels:
        if not args.data:
            raise ValueError("--labels needs --data DIR (the folder the label file's paths are relative to)")
        data = multilabel_dataset(args.data, args.labels, name=args.dataset_name)
    else:
        data = class_folder_dataset(args.data or DEMO_DATA, name=args.dataset_name)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        model = slimkern.load(name, weights=weights, device=args.device, backend=args.backend)
    print(f"sweep: {model.cfg.name} ({weights_label or 'random weights'}) on {data.name}: {len(data)} images, "
          f"{len(data.classes)} classes{' (multi-label)' if data.multilabel else ''}, {len(args.widths)} widths, "
          f"mode {args.mode}, probes {args.probe}, {args.seeds} seeds -> {args.out}")
    summary = run_sweep(model, data, args.out, widths=args.widths, mode=args.mode, probes=PROBE_CHOICES[args.probe],
                        seeds=args.seeds, weights=weights_label, batch_size=args.batch, bands=args.bands,
                        band_names=args.band_names, units=args.units, plot=not args.no_plot,
                        progress=not args.quiet)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    metric = summary["metric"].replace("_", " ")
    for probe, rows in summary["probes"].items():
        print(f"\n{probe}: {metric} (mean +- std over {len(summary['seeds'])} seeds) and retention")
        print(f"{'width':>8} {'compute':>8} {'metric':>15} {'retention':>10}")
        for row in rows:
            print(f"{row['width']:>8g} {row['relative_flops']:>8.2%} {row['metric_mean']:>8.4f} +- "
                  f"{row['metric_std']:.4f} {row['retention_mean']:>10.2%}")
    print(f"\nfeatures {summary['seconds']['features']:.0f} s, total {summary['seconds']['total']:.0f} s")


def plot_command(args: argparse.Namespace) -> int:
    from .plot import plot_folders

    if args.out is None and len(args.folders) > 1:
        raise ValueError("several folders need --out DIR for the combined plots")
    out = Path(args.out or args.folders[0])
    names = args.names.split(",") if args.names else None
    for path in plot_folders(args.folders, out, names):
        print(path)
    return 0
