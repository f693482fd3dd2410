"""Turn the GPU check's raw results ($OUT/kernels_*.json, e2e.md) into $OUT/summary.md.

    python -m benchmarks.gpu.summarize OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

OURS = ("cuda", "triton", "prefix_view", "torch_backend")


def kernel_ratios(kernels: dict) -> list[str]:
    """Per case: median time of each of slimkern's providers relative to the dense baseline of the same case
    (cuBLAS ``addmm`` on a contiguous copy of the slice, or SDPA on contiguous q/k/v); below 1 is faster."""
    cases: dict[tuple, dict[str, float]] = defaultdict(dict)
    for bench in kernels.get("benchmarks", []):
        info = bench["extra_info"]
        kind = "attention" if "tokens" in info else "linear"
        key = (kind, info["shape"], info.get("layer") or f"{info['tokens']} tokens", info["width"], info["batch"])
        cases[key][info["provider"]] = info["median_us"]
    present = [p for p in OURS if any(p in times for times in cases.values())]
    header = ["kernel", "shape", "case", "width", "batch", "providers (us)", *[f"{p} / baseline" for p in present]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for key in sorted(cases):
        times = cases[key]
        baseline = times.get("dense_copy") or times.get("sdpa_contiguous")
        ratios = [f"{times[p] / baseline:.2f}" if baseline and p in times else "-" for p in present]
        providers = ", ".join(f"{p} {t:.1f}" for p, t in sorted(times.items()))
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {key[4]} | {providers} | {' | '.join(ratios)} |")
    lines += ["", *target_lines(cases)]
    return lines


def target_lines(cases: dict[tuple, dict[str, float]]) -> list[str]:
    """The issue-5 kernel target per provider: sliced linear throughput >= 0.9x cuBLAS on a contiguous copy."""
    lines = []
    for provider in ("cuda", "triton"):
        speed = [times["dense_copy"] / times[provider] for key, times in cases.items()
                 if key[0] == "linear" and provider in times and "dense_copy" in times]
        if speed:
            speed.sort()
            lines.append(f"- sliced linear, {provider} throughput vs cuBLAS on a contiguous copy: median "
                         f"{speed[len(speed) // 2]:.2f}x, worst {speed[0]:.2f}x; {sum(s >= 0.9 for s in speed)} of "
                         f"{len(speed)} cases >= 0.9x")
    return lines


def e2e_cuda_vs_triton(result: dict) -> list[str]:
    """The issue-5 end-to-end target: the cuda backend at least as fast as triton at every width and batch."""
    rows = [r for r in result.get("rows", []) if "cuda_ms" in r and "triton_ms" in r]
    if not rows:
        skipped = result.get("skipped_backends", {})
        return [f"cuda backend left out of the end-to-end run: {skipped['cuda']}", ""] if "cuda" in skipped else []
    cells = ", ".join(f"b{r['batch']} w{r['width']:g} {r['cuda_ms'] / r['triton_ms']:.2f}" for r in rows)
    slower = [r for r in rows if r["cuda_ms"] > r["triton_ms"]]
    return [f"End to end, cuda / triton latency (batch, width): {cells}; "
            f"{len(rows) - len(slower)} of {len(rows)} rows at least as fast.", ""]


def main(out_dir: str) -> None:
    out = Path(out_dir)
    parts = [f"# slimkern GPU check: {out.name}", ""]
    env = out / "env.txt"
    if env.exists():
        parts += ["```", env.read_text().strip(), "```", ""]
    benchmarks = [b for path in sorted(out.glob("kernels_*.json")) for b in json.loads(path.read_text())["benchmarks"]]
    if benchmarks:
        parts += ["## Kernels (median of 10 rounds)", "", *kernel_ratios({"benchmarks": benchmarks}), ""]
    e2e = out / "e2e.md"
    if e2e.exists():
        parts += ["## End to end", "", e2e.read_text()]
    try:  # absent or cut short when the e2e stage failed or hit its time limit
        parts += e2e_cuda_vs_triton(json.loads((out / "e2e.json").read_text()))
    except (OSError, ValueError):
        pass
    serve = out / "serve_load.md"
    if serve.exists():
        parts += ["## Serving under load", "", serve.read_text()]
    (out / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
