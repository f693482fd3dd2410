"""The built-in demo (``slimkern demo``, ``examples/quickstart.py``): one checkpoint, five widths.

Loads SatMAE ViT-L/16 (random weights unless ``--weights``), embeds real EuroSAT images at widths
1.0 ... 0.01 and prints, per width, the plan, the relative FLOPs, the measured latency, the speed-up
over width 1.0 and the error against the float64 reference path.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import slimkern
from slimkern.samples import eurosat_sample

WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.01)


def median_latency(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds after one warm-up call (synchronising on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_demo(model_name: str = "satmae", weights: str | None = None, batch: int = 2, device: str = "cpu",
             backend: str = "auto", repeats: int = 3) -> list[dict]:
    """Measure every width of :data:`WIDTHS`; returns one row per width and prints the table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if weights is None else "default")
        model = slimkern.load(model_name, weights=weights, device=device, backend=backend)
    images, classes = eurosat_sample(batch, size=model.cfg.arch.img_size)
    # EuroSAT RGB: Sentinel-2 B04, B03, B02 as 8-bit pixels, here scaled to [0, 1]
    prepared = model.prepare(images, bands=("R", "G", "B"), units="reflectance")
    x = prepared.x
    print(f"model {model.cfg.name}: {model.cfg.description}")
    print(f"weights: {weights or 'random (no --weights given; outputs carry no pretrained meaning)'}")
    print(f"input: {batch} EuroSAT images ({', '.join(classes)}) at {tuple(x.shape[2:])} px, device {device}, "
          f"backend {model.backend.name}, {torch.get_num_threads()} CPU threads\n")
    header = f"{'width':>6} {'d_k':>4} {'d_h':>5} {'rel FLOPs':>9} {'latency ms':>10} {'speed-up':>8} {'max err':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for width in WIDTHS:
        block = model.plan(width).blocks[0]
        latency = median_latency(lambda w=width: model.run(x, w, **prepared.inputs), repeats)
        report = model.validate(x[:1], width, **prepared.inputs)  # the float64 reference is slow: one image
        row = {"width": width, "d_k": block.head_dim, "d_h": block.mlp_hidden,
               "relative_flops": model.relative_flops(width), "latency_ms": latency * 1e3,
               "max_abs_error": report.max_abs_error, "rel_error": report.rel_error, "ok": report.ok}
        row["speedup"] = rows[0]["latency_ms"] / row["latency_ms"] if rows else 1.0
        rows.append(row)
        print(f"{width:>6g} {row['d_k']:>4} {row['d_h']:>5} {row['relative_flops']:>9.1%} "
              f"{row['latency_ms']:>10.1f} {row['speedup']:>7.2f}x {row['max_abs_error']:>9.2e}")
    print("\nmax err: largest absolute difference of the first image's pooled embedding from the float64 "
          "reference path.")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slimkern demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="satmae", help="registered model name (default: satmae)")
    parser.add_argument("--weights", default=None, help="path to the official checkpoint (default: random weights)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (1-10, default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.batch <= 10:
        raise SystemExit(f"--batch must be between 1 and 10 (the shipped sample has 10 images), got {args.batch}")
    rows = run_demo(args.model, args.weights, args.batch, args.device, args.backend)
    return 0 if all(r["ok"] for r in rows) else 1
