"""Turn the GPU check's raw results ($OUT/kernels_*.json, e2e.md) into $OUT/summary.md.

    python -m benchmarks.gpu.summarize OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def kernel_ratios(kernels: dict) -> list[str]:
    """Per case: median time of each provider relative to the dense baseline of the same case."""
    cases: dict[tuple, dict[str, float]] = defaultdict(dict)
    for bench in kernels.get("benchmarks", []):
        info = bench["extra_info"]
        kind = "attention" if "tokens" in info else "linear"
        key = (kind, info["shape"], info.get("layer") or f"{info['tokens']} tokens", info["width"], info["batch"])
        cases[key][info["provider"]] = info["median_us"]
    lines = ["| kernel | shape | case | width | batch | providers (us) | slimkern / baseline |", "|" + " --- |" * 7]
    for key in sorted(cases):
        times = cases[key]
        baseline = times.get("dense_copy") or times.get("sdpa_contiguous")
        ours = times.get("triton") or times.get("prefix_view") or times.get("torch_backend")
        ratio = f"{ours / baseline:.2f}" if baseline and ours else "-"
        providers = ", ".join(f"{p} {t:.1f}" for p, t in sorted(times.items()))
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {key[4]} | {providers} | {ratio} |")
    return lines


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
    serve = out / "serve_load.md"
    if serve.exists():
        parts += ["## Serving under load", "", serve.read_text()]
    (out / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
