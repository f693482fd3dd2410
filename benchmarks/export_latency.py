"""Exported artefacts vs slimkern's own run(): latency per width and runtime, file sizes vs the full checkpoint.

    python -m benchmarks.export_latency                                        # vit_tiny_eurosat, shipped weights
    python -m benchmarks.export_latency --model satmae --batches 1 --json r.json --markdown r.md   # ViT-L/16, 224 px

Per width, the model is exported to every format (timed: trace + write, for aoti the compile), each file is loaded in
its own runtime (pt2: torch.export.load, onnx: onnxruntime CPU, aoti: the AOTInductor package loader), and all of
them are timed next to ``model.run`` in interleaved rounds, so drift of a shared machine hits every runtime alike.
Reported: the minimum (the least disturbed call; ratios use it) and the median. Ratios are against ``run()`` at the
same width and batch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import slimkern
from benchmarks.e2e_widths import machine
from slimkern.export import load_runtime

FORMATS = ("pt2", "onnx", "aoti")
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "aoti": ".aoti.pt2"}


def interleaved_ms(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(min, median) wall time in ms of each function over ``repeats`` interleaved rounds (one call of each per
    round) after two warm-up rounds. On a machine shared with other jobs the minimum is the least disturbed call."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 2):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= 2:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: (min(values), statistics.median(values)) for name, values in samples.items()}


def run(model_name: str, weights: str | None, widths: list[float], batches: list[int], formats: list[str],
        repeats: int, folder: str, progress=None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(model_name, weights)
    size, bands = model.cfg.arch.img_size, len(model.cfg.bands)
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    result = {"model": model.cfg.name, "weights": os.path.basename(weights) if weights else "random",
              "machine": machine("cpu"), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "full_state_dict_bytes": state_bytes,
              "checkpoint_bytes": os.path.getsize(weights) if weights else None, "repeats": repeats, "rows": [],
              "exports": [], "load_average_start": os.getloadavg()[0]}
    for width in widths:
        runtimes = {}
        for fmt in formats:
            path = os.path.join(folder, f"{model.cfg.name}-{width:g}{SUFFIX[fmt]}")
            exported = slimkern.export(model, width, path, format=fmt)
            result["exports"].append({"width": width, "format": fmt, "bytes": exported.bytes,
                                      "bytes_vs_full_state_dict": exported.bytes / state_bytes,
                                      "seconds": exported.seconds, "max_verify_error": max(exported.errors.values())})
            runtimes[fmt] = load_runtime(fmt, path)
        for batch in batches:
            x = torch.randn(batch, bands, size, size)
            fns = {"run": lambda x=x, w=width: model.run(x, w)}
            fns.update({fmt: lambda f=f, x=x: f(x) for fmt, f in runtimes.items()})
            with torch.no_grad():
                times = interleaved_ms(fns, repeats)
            row = {"width": width, "batch": batch, "relative_flops": model.relative_flops(width),
                   "plan": model.plan(width).summary()}
            for name, (fastest, median) in times.items():
                row.update({f"{name}_min_ms": fastest, f"{name}_median_ms": median})
            row.update({f"{fmt}_vs_run": times[fmt][0] / times["run"][0] for fmt in runtimes})
            result["rows"].append(row)
            result["load_average_end"] = os.getloadavg()[0]
            if progress is not None:
                progress(result)
        del runtimes
        for name in os.listdir(folder):  # the next width's files only: ViT-L exports are GBs
            os.remove(os.path.join(folder, name))
    return result


def markdown(result: dict) -> str:
    fmts = sorted({e["format"] for e in result["exports"]}, key=FORMATS.index)
    checkpoint = (f", checkpoint file {result['checkpoint_bytes'] / 2**20:.1f} MiB ({result['weights']})"
                  if result["checkpoint_bytes"] else "")
    lines = [f"# {result['model']} exports vs run(), {result['machine']}, {result['cpu_threads']} threads, "
             f"torch {result['torch']}, {result['date']}", "",
             f"Latency in ms, minimum / median of {result['repeats']} interleaved rounds; 1-minute load average "
             f"{result['load_average_start']:.1f} at the start, {result.get('load_average_end', float('nan')):.1f} at "
             "the end (on a busy machine medians carry its load). The minimum is each runtime's least disturbed call, "
             "and the ratios (minimum over run()'s minimum, same rounds) are what to read.", ""]
    cols = ["width", "plan", "rel FLOPs", "batch", "run()", *fmts, *[f"{f} / run" for f in fmts]]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in result["rows"]:
        times = [f"{r[f'{n}_min_ms']:.2f} / {r[f'{n}_median_ms']:.1f}" for n in ("run", *fmts)]
        lines.append("| " + " | ".join([f"{r['width']:g}", r["plan"], f"{r['relative_flops']:.1%}", str(r["batch"]),
                                        *times, *[f"{r[f'{f}_vs_run']:.2f}" for f in fmts]]) + " |")
    lines += ["", f"Files (full-width state dict {result['full_state_dict_bytes'] / 2**20:.1f} MiB in float32"
                  f"{checkpoint}) and export times (trace; write, for aoti the AOTInductor compile; verify):", "",
              "| width | format | MiB | / full state dict | trace s | write / compile s | verify s | verify error |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in result["exports"]:
        s = e["seconds"]
        write = s.get("compile and write", s.get("write", 0.0))
        lines.append(f"| {e['width']:g} | {e['format']} | {e['bytes'] / 2**20:.1f} | "
                     f"{e['bytes_vs_full_state_dict']:.2f} | {s['trace']:.1f} | {write:.1f} | "
                     f"{s.get('verify', 0.0):.1f} | {e['max_verify_error']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from slimkern.zoo.eurosat_vit import WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_eurosat")
    parser.add_argument("--weights", default=None, help="checkpoint (default: vit_tiny_eurosat's shipped weights, "
                        "random weights for other models)")
    parser.add_argument("--widths", default="1,0.25,0.1")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    weights = args.weights or (str(WEIGHTS) if args.model == "vit_tiny_eurosat" else None)

    def save(result: dict) -> None:  # after every row, so an interrupted run keeps what it measured
        for path, text in ((args.json, json.dumps(result, indent=2)), (args.markdown, markdown(result))):
            if path:
                Path(path).write_text(text)

    with tempfile.TemporaryDirectory() as folder:
        result = run(args.model, weights, [float(w) for w in args.widths.split(",")],
                     [int(b) for b in args.batches.split(",")], args.formats.split(","), args.repeats, folder, save)
    save(result)
    print(markdown(result))


if __name__ == "__main__":
    main()
