"""Cost of ``run()``'s input check against a width-0.1 forward pass, per model, in one run.

    python -m benchmarks.input_check [--json out.json] [--markdown out.md]

For each model (random weights, its default input size, batch 2) the same normalised batch is timed three ways in
interleaved rounds: the input check alone (:func:`slimkern.input_check.check_input`), ``run(x, 0.1, check="off")``
and ``run(x, 0.1)`` (check on). The claim (issue 15): the check costs under 1 % of a width-0.1 forward. The check
reads a fixed-size sample (at most 4 images x 32 x 32 pixels per band), so its cost does not grow with the input.
"""

from __future__ import annotations

import argparse
import datetime
import os
import warnings

import torch

import slimkern
from benchmarks.e2e_widths import interleaved_median_ms, machine
from benchmarks.report import save
from slimkern.input_check import check_input

# (model, architecture overrides): a ViT-L at 224 px (the README's reference), a 4-frame HLS ViT-L, a ViT-S on 13
# bands and the 64 px demo ViT, the smallest forward in the zoo
MODELS = (("satmae", {}), ("prithvi_eo_v2_300", {}), ("ssl4eo_vits16_moco", {}), ("vit_tiny_eurosat", {}))


def measure(name: str, overrides: dict, batch: int, repeats: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(name, **overrides)
    size = model.cfg.arch.img_size
    frames = (getattr(model.cfg.arch, "num_frames", 1),) if 5 in model.input_ranks else ()
    x = torch.randn(batch, len(model.cfg.bands), *frames, size, size)
    names = model.input_band_names(x)
    times = interleaved_median_ms({
        "check": lambda: check_input(name, x, names),
        "forward": lambda: model.run(x, 0.1, check="off"),
        "forward_checked": lambda: model.run(x, 0.1),
    }, repeats)
    return {"model": name, "input": list(x.shape), "check_ms": times["check"], "forward_ms": times["forward"],
            "forward_checked_ms": times["forward_checked"], "check_vs_forward": times["check"] / times["forward"]}


def markdown(result: dict) -> str:
    lines = [f"# run() input check vs a width-0.1 forward, {result['machine']}, {result['threads']} threads, "
             f"torch {result['torch']}, {result['date']}", "",
             f"Load average (1 min) at start / end: {result['load'][0]:.1f} / {result['load'][1]:.1f} "
             "(a shared machine).", "",
             "| model | input | check ms | width-0.1 forward ms | forward with check ms | check / forward |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['check_ms']:.3f} | "
                     f"{r['forward_ms']:.1f} | {r['forward_checked_ms']:.1f} | {r['check_vs_forward']:.2%} |")
    lines += ["", "Medians of interleaved rounds in one run (random weights, fp32, torch backend). The difference "
              "between the two forward columns is within the run-to-run noise of a shared machine; the check "
              "column is the cost measured alone."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", default=",".join(name for name, _ in MODELS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    chosen = args.models.split(",")
    load = os.getloadavg()[0]
    rows = [measure(name, dict(MODELS).get(name, {}), args.batch, args.repeats) for name in chosen]
    result = {"machine": machine("cpu"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "batch": args.batch, "load": [load, os.getloadavg()[0]],
              "rows": rows}
    text = markdown(result)
    save(result, text, args.json, args.markdown)
    print(text)


if __name__ == "__main__":
    main()
