"""``slimkern doctor``: is this machine fit to run slimkern, and in which dtype?

Prints the CPU (vendor, model, the instruction-set flags that decide low-precision support), torch's CPU build
(capability, oneDNN, threads), each backend's availability, what ``dtype="auto"`` picks and why, and the result of
:mod:`slimkern.probes` (every op the runtime uses against float64) per dtype. Exit code 0 when every probe passes,
1 when any op computes wrongly here (also an optional fused GEMM, which the runtime replaces by its plain ops).
"""

from __future__ import annotations

import argparse

import torch

from . import probes
from .backends import describe_backends
from .hardware import cpu_summary
from .precision import DTYPE_NAMES, auto_dtype

DEFAULT_DTYPES = ("float32", "bfloat16", "float16")


def devices() -> list[str]:
    """Devices probed: the CPU, and the GPU when torch sees one."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def probe_table(results: dict[str, tuple[probes.ProbeResult, ...]], every_case: bool) -> list[str]:
    """One row per op (its worst case) or per case, one column per dtype: relative error vs float64."""
    names = list(results)
    keys = list(dict.fromkeys((r.op, r.case if every_case else "") for rs in results.values() for r in rs))
    width = max(len(f"{op} [{case}]" if case else op) for op, case in keys)
    lines = [f"  {'op':<{width}}  " + "  ".join(f"{n:>15}" for n in names)]
    for op, case in keys:
        cells = []
        for name in names:
            rows = [r for r in results[name] if r.op == op and (not every_case or r.case == case)]
            if not rows:  # no such case in this dtype (the fused GEMMs outside float32/bfloat16)
                cells.append("-")
                continue
            worst = max(rows, key=lambda r: r.rel_error / r.tolerance)
            cells.append(f"{'ok' if all(r.ok for r in rows) else 'WRONG'} {worst.rel_error:8.1e}")
        label = f"{op} [{case}]" if case else op
        lines.append(f"  {label:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
    return lines


def report(dtypes: tuple[str, ...] = DEFAULT_DTYPES, every_case: bool = False) -> tuple[str, bool]:
    """The doctor's text and whether every probe passed."""
    lines = ["slimkern doctor"]
    lines += [f"  {key:<10} {value}" for key, value in cpu_summary().items()]
    lines.append("  backends   " + "\n             ".join(f"{n}: {line}" for n, line in describe_backends().items()))
    for device in devices():
        lines.append(f"  auto dtype {device}: {auto_dtype(device)}")
    wrong: list[probes.ProbeResult] = []
    for device in devices():
        results = {name: probes.run_probes(device, DTYPE_NAMES[name]) for name in dtypes}
        cases = max(len(r) for r in results.values())
        lines += ["", f"probes on {device}: relative error vs float64 (tolerance per op: "
                  + ", ".join(f"{n} {probes.TOLERANCE[DTYPE_NAMES[n]]:g}" for n in dtypes)
                  + f"; {'every case' if every_case else f'each op its worst case, --all lists all {cases}'})"]
        lines += probe_table(results, every_case)
        wrong_here = [r for rs in results.values() for r in rs if not r.ok]
        lines += [f"  WRONG: {r}" for r in wrong_here]
        wrong += wrong_here
    lines += ["", verdict(wrong)]
    return "\n".join(lines), not wrong


def verdict(wrong: list[probes.ProbeResult]) -> str:
    """The doctor's last line: what the wrong probes mean for a user (refused dtypes or a slower fallback)."""
    if not wrong:
        return "result: every probe passes"
    if any(r.required for r in wrong):
        return "result: some ops compute wrongly here; slimkern.load refuses those dtypes on the CPU (see above)"
    dtypes = ", ".join(dict.fromkeys(str(r.dtype).removeprefix("torch.") for r in wrong))
    return (f"result: the fused GEMMs of the CPU fast path compute wrongly here in {dtypes}; the torch backend runs "
            f"its plain ops instead (correct, slower)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES),
                        help=f"comma-separated dtypes to probe (default {','.join(DEFAULT_DTYPES)})")
    parser.add_argument("--all", action="store_true", help="one row per probe case instead of per op")


def run(args: argparse.Namespace) -> int:
    dtypes = tuple(d.strip() for d in args.dtypes.split(","))
    unknown = [d for d in dtypes if d not in DTYPE_NAMES]
    if unknown:
        raise ValueError(f"--dtypes takes {', '.join(DTYPE_NAMES)}; got {', '.join(unknown)}")
    text, healthy = report(dtypes, every_case=args.all)
    print(text)
    return 0 if healthy else 1
