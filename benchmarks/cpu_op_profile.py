"""Where a CPU forward spends its time, per op kind and width (torch.profiler, self CPU time per forward).

    python -m benchmarks.cpu_op_profile --model mae_vitb16 --batch 2 --dtype float32 --widths 1,0.5,0.25,0.1,0.01

Each width runs ``--repeats`` forwards of ``model.run`` under the profiler after two warm-up calls; every aten op's
self time is summed into a kind (GEMM, attention, LayerNorm, activation, elementwise add/mul, copies and layout,
the rest) and divided by the number of forwards. ``ops`` is the number of aten ops a forward dispatches: at small
widths the per-op overhead, not the arithmetic, sets the latency. ``--dense`` profiles the materialised dense copy
(benchmarks/dense_baseline.py) instead, for comparison.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import slimkern
from benchmarks.dense_baseline import dense_forward, materialise

#: aten op name (without the ``aten::`` prefix) -> kind; anything else is "other".
KINDS = {
    "GEMM": ("addmm", "mm", "bmm", "matmul", "linear", "_linear_pointwise", "baddbmm", "_mkl_linear"),
    "attention": ("_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention",
                  "_scaled_dot_product_attention_math", "_softmax", "softmax"),
    "LayerNorm": ("native_layer_norm", "layer_norm"),
    "GELU/SiLU": ("gelu", "silu"),
    "add/mul (bias, residual, LayerScale)": ("add", "add_", "mul", "mul_"),
    "copies and layout": ("copy_", "clone", "contiguous", "_to_copy", "to", "cat", "permute", "transpose", "view",
                          "reshape", "unbind", "select", "slice", "expand", "as_strided", "t", "_unsafe_view",
                          "empty", "empty_like", "empty_strided", "resize_", "constant_pad_nd", "flatten"),
}


def kind_of(name: str) -> str:
    short = name.removeprefix("aten::").removeprefix("mkldnn::")
    return next((kind for kind, ops in KINDS.items() if short in ops), "other")


def profile_forward(fn, repeats: int) -> tuple[dict[str, float], float, float]:
    """Self CPU ms per forward by kind, aten ops per forward, wall ms per forward (profiled)."""
    for _ in range(2):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    by_kind: dict[str, float] = defaultdict(float)
    ops = 0
    for event in prof.key_averages():
        if not event.key.startswith(("aten::", "mkldnn::")):
            continue
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e3 / repeats
        ops += event.count
    total = sum(by_kind.values())
    return dict(by_kind), ops / repeats, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mae_vitb16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--widths", default="1,0.5,0.25,0.1,0.01")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense", action="store_true", help="profile the materialised dense copy instead")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(args.model, dtype=getattr(torch, args.dtype))
    size = model.cfg.arch.img_size
    x = torch.randn(args.batch, len(model.cfg.bands), size, size, dtype=model.dtype)
    kinds = [*KINDS, "other"]
    print(f"{model.cfg.name}, batch {args.batch}, {args.dtype}, {torch.get_num_threads()} threads, "
          f"{'dense copy' if args.dense else 'slimkern ' + model.backend.name}: self CPU ms per forward "
          f"(load average {os.getloadavg()[0]:.1f}, OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'default')})")
    print("| width | " + " | ".join(kinds) + " | total | aten ops |")
    print("|" + " --- |" * (len(kinds) + 3))
    for width in (float(w) for w in args.widths.split(",")):
        plan = model.plan(width)
        if args.dense:
            dense = materialise(model, plan)

            def fn(dense=dense, plan=plan):
                return dense_forward(model, dense, plan, x)
        else:
            def fn(width=width):
                return model.run(x, width)
        by_kind, ops, total = profile_forward(fn, args.repeats)
        cells = [f"{by_kind.get(k, 0.0):.1f} ({by_kind.get(k, 0.0) / total:.0%})" for k in kinds]
        print(f"| {width:g} | " + " | ".join(cells) + f" | {total:.1f} | {ops:.0f} |")


if __name__ == "__main__":
    main()
