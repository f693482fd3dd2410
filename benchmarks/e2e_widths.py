"""End-to-end latency per width: slimkern backends vs timm and vs a materialised dense copy.

    python -m benchmarks.e2e_widths --compile --onnxruntime --batches 2,16        # CPU, float32 (make bench)
    python -m benchmarks.e2e_widths --compile --dtype bfloat16 --batches 2,16     # CPU, bfloat16
    python -m benchmarks.e2e_widths --device cuda --dtype bfloat16 --batches 1,64 \\
        --backends torch,triton,cuda --compile --json e2e.json --markdown e2e.md   # the GPU table

All timings come from one run on one machine, so the ratios compare like with like. On a shared machine, run it
with ``OMP_WAIT_POLICY=PASSIVE``: OpenMP's spinning workers (torch's providers) otherwise lose their cores to the
neighbours at every one of a forward's ~100 parallel regions, and 2 threads run slower than 1 (onnxruntime's own
thread pool is not affected); the table records the policy and the load. A requested backend
that cannot run here (e.g. ``cuda`` without its built extension) is left out with its reason
(``skipped_backends``). Baselines per width: the slimmed weights copied out into contiguous dense tensors and
run with plain PyTorch (eager; ``--compile``: also ``torch.compile`` of it), ``--onnxruntime``: the dense copy
exported to ONNX and run by onnxruntime's CPU provider (float32 only, the anchor a CPU user would deploy); at
width 1.0 also timm's VisionTransformer.
CPU targets (issue 12): float32, every width <= 1.0x onnxruntime on the dense copy (batch 2 and 16); bfloat16 on a
CPU with native bf16, t/F <= 1.5 for s >= 0.1 and <= 4 at s = 0.01, every width <= 1.1x torch.compile on the dense
copy, width 1.0 <= 1.1x timm.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch

import slimkern
from benchmarks.dense_baseline import dense_forward, materialise, onnxruntime_session
from benchmarks.report import save
from slimkern.backends import select_backend
from slimkern.zoo.vit import to_timm

WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.01)


#: Pause before each timed call on the CPU: the thread pools of OpenMP (torch) and onnxruntime spin for a while
#: after a call returns, which would slow whichever provider runs next.
CPU_PAUSE_S = 0.05


def interleaved_median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time in ms of each function, timed in interleaved rounds (one call of each per round) so that
    drift of the machine's speed hits every provider alike; two warm-up rounds; synchronises on CUDA."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 2):
        for name, fn in fns.items():
            sync()
            if not torch.cuda.is_available():
                time.sleep(CPU_PAUSE_S)
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def on_backend(model: slimkern.SlimModel, backend: str, x: torch.Tensor, width: float):
    def fn():
        model.backend_name = backend
        return model.run(x, width)

    return fn


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def add_ratios(row: dict, rows: list[dict], backends: list[str]) -> None:
    """Ratios against the dense copy (eager, compiled, onnxruntime), the width-1.0 row of the same batch (t/F)
    and timm."""
    full = row if row["width"] == 1.0 else next((r for r in rows if r["batch"] == row["batch"] and r["width"] == 1.0),
                                                None)
    for backend in backends:
        row[f"{backend}_vs_dense"] = row[f"{backend}_ms"] / row["dense_eager_ms"]
        for baseline in ("dense_compiled", "dense_onnxruntime"):
            if f"{baseline}_ms" in row:
                row[f"{backend}_vs_{baseline.removeprefix('dense_')}"] = row[f"{backend}_ms"] / row[f"{baseline}_ms"]
        if full is not None:
            row[f"{backend}_time_vs_flops"] = (row[f"{backend}_ms"] / full[f"{backend}_ms"]) / row["relative_flops"]
        if row["width"] == 1.0:
            row[f"{backend}_vs_timm"] = row[f"{backend}_ms"] / row["timm_ms"]


def run(model_name: str, batches: list[int], widths: list[float], backends: list[str], device: str,
        dtype: torch.dtype, repeats: int, compile_dense: bool, progress=None, onnxruntime: bool = False,
        **arch) -> dict:
    """Time every (batch, width); ``progress(result)`` is called after each row so a time limit keeps partial
    results. ``torch.compile`` and the onnxruntime export are redone for every (batch, width)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(model_name, device=device, dtype=dtype, **arch)
    size, bands = model.cfg.arch.img_size, len(model.cfg.bands)
    vit = to_timm(model)
    rows = []
    skipped = {}
    for backend in backends:
        try:
            select_backend(backend, model.device, dtype)
        except NotImplementedError as exc:
            skipped[backend] = str(exc)
            print(f"leaving out backend {backend!r}: {exc}", file=sys.stderr)
    backends = [b for b in backends if b not in skipped]
    if onnxruntime and (device != "cpu" or dtype != torch.float32):
        skipped["onnxruntime"] = "onnxruntime's CPU provider is timed in float32 on the CPU only"
        onnxruntime = False
    folder = tempfile.TemporaryDirectory(prefix="e2e-onnx-")
    result = {"model": model.cfg.name, "device": device, "dtype": str(dtype).removeprefix("torch."),
              "machine": machine(device), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "timm": timm.__version__, "date": datetime.date.today().isoformat(), "backends": backends,
              "skipped_backends": skipped, "load_average_start": os.getloadavg(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "rows": rows}
    for batch in batches:
        x = torch.randn(batch, bands, size, size, device=device, dtype=dtype)
        for width in widths:
            plan = model.plan(width)
            row = {"batch": batch, "width": width, "d_k": plan.blocks[0].head_dim, "d_h": plan.blocks[0].mlp_hidden,
                   "relative_flops": model.relative_flops(width)}
            dense = materialise(model, plan)
            fns = {"dense_eager": lambda d=dense, p=plan, x=x: dense_forward(model, d, p, x)}
            if compile_dense:
                torch._dynamo.reset()  # a fresh compile per (batch, width), never dynamo's recompile limit
                compiled = torch.compile(dense_forward)
                fns["dense_compiled"] = lambda c=compiled, d=dense, p=plan, x=x: c(model, d, p, x)
            if onnxruntime:
                session = onnxruntime_session(model, dense, plan, x, folder.name, torch.get_num_threads())
                fns["dense_onnxruntime"] = lambda s=session, x=x: s(x)
                row["dense_onnxruntime_max_abs_error"] = float(
                    (torch.from_numpy(session(x)) - dense_forward(model, dense, plan, x)).abs().max())
            if width == 1.0:
                fns["timm"] = lambda x=x: vit(x)
            fns.update({backend: on_backend(model, backend, x, width) for backend in backends})
            with torch.no_grad():
                row.update({f"{name}_ms": ms for name, ms in interleaved_median_ms(fns, repeats).items()})
            del dense, fns  # one dense copy (and session) at a time
            session = None
            for file in Path(folder.name).iterdir():
                file.unlink()
            for backend in backends:
                model.backend_name = backend
                row[f"{backend}_max_abs_error"] = model.validate(x[:1], width).max_abs_error
            add_ratios(row, rows, backends)
            rows.append(row)
            if progress is not None:
                progress(result)
    folder.cleanup()
    result["load_average_end"] = os.getloadavg()
    return result


def markdown(result: dict) -> str:
    backends = result["backends"]
    lines = [f"# {result['model']} end to end, {result['machine']}, {result['cpu_threads']} threads, "
             f"{result['dtype']}, torch {result['torch']}, {result['date']}", ""]
    if "load_average_start" in result:
        load = [f"{result[k][0]:.1f}" for k in ("load_average_start", "load_average_end") if k in result]
        lines += [f"Machine load (1-min load average) at start / end: {' / '.join(load)}; OpenMP wait policy "
                  f"{result.get('omp_wait_policy', 'default')}.", ""]
    baselines = [(key, label) for key, label in (("compiled", "dense compiled"), ("onnxruntime", "dense ORT"))
                 if any(f"dense_{key}_ms" in r for r in result["rows"])]
    cols = ["batch", "width", "d_k'", "d_h'", "rel FLOPs", *[f"{b} ms" for b in backends], "dense eager ms",
            *[f"{label} ms" for _, label in baselines], *[f"{b} / dense" for b in backends],
            *[f"{b} / {label}" for b in backends for _, label in baselines], *[f"{b} t/F" for b in backends],
            *[f"{b} max err" for b in backends]]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in result["rows"]:
        cells = [str(r["batch"]), f"{r['width']:g}", str(r["d_k"]), str(r["d_h"]), f"{r['relative_flops']:.1%}",
                 *[f"{r[f'{b}_ms']:.2f}" for b in backends], f"{r['dense_eager_ms']:.2f}"]
        cells += [f"{r[f'dense_{key}_ms']:.2f}" if f"dense_{key}_ms" in r else "-" for key, _ in baselines]
        cells += [f"{r[f'{b}_vs_dense']:.2f}" for b in backends]
        cells += [f"{r[f'{b}_vs_{key}']:.2f}" if f"{b}_vs_{key}" in r else "-"
                  for b in backends for key, _ in baselines]
        cells += [f"{r[f'{b}_time_vs_flops']:.2f}" if f"{b}_time_vs_flops" in r else "-" for b in backends]
        cells += [f"{r[f'{b}_max_abs_error']:.1e}" for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    full = [r for r in result["rows"] if r["width"] == 1.0]
    lines += ["", "Width 1.0 vs timm eager: " + ", ".join(
        f"batch {r['batch']}: " + ", ".join(f"{b} {r[f'{b}_vs_timm']:.2f}x" for b in backends) for r in full),
        "", "`/ dense`: latency over the materialised dense copy (eager) at the same width; `/ dense compiled`, "
        "`/ dense ORT`: over torch.compile and onnxruntime (CPU provider, all graph optimisations) on that copy. "
        "`t/F`: (t(s)/t(1)) / (FLOPs(s)/FLOPs(1)); 1.0 = latency follows FLOPs exactly. "
        "`max err`: pooled output vs the float64 reference path, first image."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="satmae")
    parser.add_argument("--batches", default="2", help="comma-separated batch sizes")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    parser.add_argument("--backends", default="torch", help="comma-separated slimkern backends")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the dense copy")
    parser.add_argument("--onnxruntime", action="store_true",
                        help="also time onnxruntime on the dense copy exported to ONNX (CPU, float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)

    def save_partial(result: dict) -> None:
        save(result, markdown(result), args.json, args.markdown)

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.model, [int(b) for b in args.batches.split(",")], [float(w) for w in args.widths.split(",")],
                 args.backends.split(","), args.device, getattr(torch, args.dtype), args.repeats, args.compile,
                 save_partial, onnxruntime=args.onnxruntime)
    print(markdown(result))


if __name__ == "__main__":
    main()
