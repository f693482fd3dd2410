"""Trained vs starting checkpoint: the acceptance table of learned slimmable training (issue 18).

    python -m benchmarks.train_compare runs/sweep-original runs/sweep-trained [--out compare.md]

Reads two ``slimkern sweep`` folders of the same data, widths and seeds, and prints per probe and width
the metric (mean +- std over seeds) of both and their difference. A width "beats" the starting curve when
the mean gain exceeds 2 standard deviations, taking the larger of the two curves' seed stds (the splits
of a seed are the same in both sweeps, so the std of the per-seed differences is shown as well).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slimkern.analysis.results import read_scores, scores_filename

WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.01)


def _scores(folder: Path, probe: str) -> tuple[dict, dict]:
    summary = json.loads((folder / "summary.json").read_text())
    return summary, read_scores(folder / scores_filename(probe, summary["num_classes"], summary["dataset"]))


def compare(original: Path, trained: Path, widths=WIDTHS) -> tuple[str, dict]:
    lines, verdict = [], {}
    for probe in ("knn", "linear"):
        s0, a = _scores(original, probe)
        s1, b = _scores(trained, probe)
        if s0["dataset"] != s1["dataset"] or s0["num_images"] != s1["num_images"] or s0["seeds"] != s1["seeds"]:
            raise ValueError("the two sweeps differ in data or seeds; compare sweeps of the same held-out images")
        lines += [f"\n{probe}: macro accuracy, mean +- std over seeds {s0['seeds']} ({s0['num_images']} images)\n",
                  "| width | relative compute | starting checkpoint | trained | gain | 2 x max std | paired diff std |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        flops = {r["width"]: r["relative_flops"] for r in s0["probes"][probe]}
        for w in widths:
            x, y = np.array(list(a[w].values())), np.array(list(b[w].values()))
            gain, bound = y.mean() - x.mean(), 2 * max(x.std(), y.std())
            verdict[f"{probe}@{w:g}"] = {"original": x.mean(), "trained": y.mean(), "gain": gain, "two_std": bound}
            lines.append(f"| {w:g} | {flops[w]:.1%} | {x.mean():.3f} +- {x.std():.3f} | {y.mean():.3f} +- "
                         f"{y.std():.3f} | {gain:+.3f} | {bound:.3f} | {(y - x).std():.3f} |")
    knn = {w: verdict[f"knn@{w:g}"] for w in (0.1, 0.25, 1.0)}
    checks = [f"k-NN at {w:g}: gain {knn[w]['gain']:+.3f} > 2 std {knn[w]['two_std']:.3f}: "
              f"{'PASS' if knn[w]['gain'] > knn[w]['two_std'] else 'FAIL'}" for w in (0.1, 0.25)]
    checks.append(f"k-NN at 1.0: change {knn[1.0]['gain']:+.3f} >= -0.010: "
                  f"{'PASS' if knn[1.0]['gain'] >= -0.010 else 'FAIL'}")
    return "\n".join(lines + ["\nAcceptance (issue 18):"] + [f"- {c}" for c in checks]) + "\n", verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("original", type=Path, help="sweep folder of the starting checkpoint")
    parser.add_argument("trained", type=Path, help="sweep folder of the trained checkpoint")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    text, _ = compare(args.original, args.trained)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
