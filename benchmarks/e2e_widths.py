"""End-to-end latency per width: slimkern vs timm (width 1.0) vs a materialised dense copy (same width).

    python -m benchmarks.e2e_widths [--model satmae] [--batch 2] [--repeats 5] [--json out.json]

All timings come from one run on one machine, so the ratios compare like with like. Targets
(issue 2, CPU): width 1.0 within 1.1x of timm; every width within 1.1x of the dense copy;
t(s)/t(1) within 1.5x of FLOPs(s)/FLOPs(1) for s >= 0.1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
import warnings

import timm
import torch

import slimkern
from benchmarks.dense_baseline import dense_forward, materialise
from slimkern.zoo.vit import to_timm

WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.01)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def run(model_name: str, batch: int, repeats: int, device: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(model_name, device=device)
    size = model.cfg.arch.img_size
    x = torch.randn(batch, len(model.cfg.bands), size, size, device=device)
    vit = to_timm(model)
    with torch.no_grad():
        t_timm = median_time(lambda: vit(x), repeats)
    rows = []
    for width in WIDTHS:
        plan = model.plan(width)
        dense = materialise(model, plan)
        t_dense = median_time(lambda d=dense, p=plan: dense_forward(model, d, p, x), repeats)
        del dense  # one dense copy at a time
        t_slim = median_time(lambda w=width: model.run(x, w), repeats)
        rows.append({"width": width, "d_k": plan.blocks[0].head_dim, "d_h": plan.blocks[0].mlp_hidden,
                     "relative_flops": model.relative_flops(width), "slimkern_ms": t_slim * 1e3,
                     "dense_copy_ms": t_dense * 1e3})
    full = rows[0]["slimkern_ms"]
    for row in rows:
        row["vs_dense"] = row["slimkern_ms"] / row["dense_copy_ms"]
        row["time_vs_flops"] = (row["slimkern_ms"] / full) / row["relative_flops"]
    return {
        "model": model.cfg.name, "batch": batch, "device": device,
        "machine": cpu_name() if device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "timm": timm.__version__,
        "date": datetime.date.today().isoformat(), "timm_ms": t_timm * 1e3,
        "width1_vs_timm": full / (t_timm * 1e3), "rows": rows,
    }


def print_report(result: dict) -> None:
    print(f"{result['model']} batch {result['batch']} on {result['machine']} ({result['threads']} threads), "
          f"torch {result['torch']}, {result['date']}")
    print(f"timm eager width 1.0: {result['timm_ms']:.1f} ms; slimkern width 1.0 / timm = "
          f"{result['width1_vs_timm']:.2f} (target <= 1.1)\n")
    header = (f"{'width':>6} {'d_k':>4} {'d_h':>5} {'rel FLOPs':>9} {'slimkern ms':>11} {'dense ms':>9} "
              f"{'vs dense':>8} {'t/F ratio':>9}")
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        print(f"{r['width']:>6g} {r['d_k']:>4} {r['d_h']:>5} {r['relative_flops']:>9.1%} {r['slimkern_ms']:>11.1f} "
              f"{r['dense_copy_ms']:>9.1f} {r['vs_dense']:>8.2f} {r['time_vs_flops']:>9.2f}")
    print("\nvs dense: slimkern / materialised dense copy at the same width (target <= 1.1).")
    print("t/F ratio: (t(s)/t(1)) / (FLOPs(s)/FLOPs(1)) (target <= 1.5 for s >= 0.1).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="satmae")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    result = run(args.model, args.batch, args.repeats, args.device)
    print_report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
