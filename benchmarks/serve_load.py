"""Load test of the HTTP server: bounded concurrent loopback clients with mixed budgets for a fixed time.

    python -m benchmarks.serve_load                                       # CPU: satmae, 8 clients, 20 s
    python -m benchmarks.serve_load --device cuda --dtype bfloat16 --seconds 15 --json serve_load.json

The server (``create_app`` under uvicorn) runs in this process on 127.0.0.1; ``--clients`` asyncio clients send
npy batches, each request with a budget drawn from ``--budgets``, until ``--seconds`` have passed. Reported:
throughput (requests and images per second), p50/p99 latency per width served, errors (any non-200: must be 0),
and memory (RSS; on CUDA also allocated and reserved) after the warm-up, at half time and at the end. The warm-up
sends every budget once, then runs the concurrent load for ``--warmup-seconds``. The allocator may still take
memory for merged batch sizes it has not seen before in the first half; a leak keeps growing, so the check is that
the second half grows by at most ``--max-growth-mb``. Exits 1 when there are errors or memory grows.

On CPU, glibc's per-thread arenas and its sliding mmap threshold make RSS creep up under many-megabyte request
buffers freed in several threads (no Python object or tensor is kept: their counts stay flat). Run long-lived CPU
servers with ``MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576`` (or jemalloc / tcmalloc via ``LD_PRELOAD``);
the environment is recorded with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import random
import time
import warnings
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import torch

import slimkern
from slimkern.precision import DTYPE_CHOICES
from slimkern.serving.profile import device_name
from slimkern.serving.server import background_server, create_app

# glibc settings that keep a multi-threaded server's RSS flat on CPU (recorded with the results)
ALLOCATOR_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "LD_PRELOAD")


def parse_budgets(text: str) -> list[dict[str, float]]:
    """``"width=1,flops=0.1,latency_ms=50"`` -> one budget dict per entry."""
    budgets = []
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in ("width", "flops", "latency_ms") or not value:
            raise argparse.ArgumentTypeError(f"budgets look like width=0.5,flops=0.1,latency_ms=20; got {item!r}")
        budgets.append({name: float(value)})
    return budgets


def parse_arch(text: str) -> dict[str, int | float]:
    """``"depth=2,dim=128,num_heads=2"`` -> architecture overrides for ``slimkern.load``."""
    arch = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        arch[name] = float(value) if "." in value else int(value)
    return arch


def memory(device: torch.device) -> dict[str, float]:
    """Resident set size of this process (and CUDA allocated / reserved) in MiB."""
    rss_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    mem = {"rss_mib": rss_kib / 1024}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        mem["cuda_allocated_mib"] = torch.cuda.memory_allocated(device) / 2**20
        mem["cuda_reserved_mib"] = torch.cuda.memory_reserved(device) / 2**20
    return mem


def npy(x: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x.float().numpy())
    return buffer.getvalue()


async def client(http: httpx.AsyncClient, bodies: dict[int, bytes], budgets: list[dict], deadline: float | None,
                 rng: random.Random, records: list[dict]) -> None:
    """Send requests until ``deadline`` (``None``: one request per budget, the warm-up)."""
    plan = [(b, size) for b in budgets for size in bodies] if deadline is None else None
    while plan if deadline is None else time.perf_counter() < deadline:
        budget, size = plan.pop() if deadline is None else (rng.choice(budgets), rng.choice(list(bodies)))
        start = time.perf_counter()
        try:
            r = await http.post("/v1/embed", content=bodies[size], params=budget,
                                headers={"content-type": "application/x-npy"})
            status, width = r.status_code, r.headers.get("x-slimkern-width")
            detail = "" if status == 200 else r.text[:200]
        except httpx.HTTPError as err:
            status, width, detail = 0, None, repr(err)
        records.append({"status": status, "width": width, "images": size, "budget": budget, "detail": detail,
                        "ms": (time.perf_counter() - start) * 1e3})


async def load(url: str, args: argparse.Namespace, bodies: dict[int, bytes], seconds: float | None) -> list[dict]:
    records: list[dict] = []
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        if seconds is None:
            await client(http, bodies, args.budgets, None, random.Random(0), records)
        else:
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(client(http, bodies, args.budgets, deadline, random.Random(i), records)
                                   for i in range(args.clients)))
    return records


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(args, model, records: list[dict], wall_s: float, mem_before: dict, mem_mid: dict, mem_after: dict
           ) -> dict:
    ok = [r for r in records if r["status"] == 200]
    per_width = defaultdict(list)
    for r in ok:
        per_width[float(r["width"])].append(r["ms"])
    errors = [r for r in records if r["status"] != 200]
    growth = {k: mem_after[k] - mem_before[k] for k in mem_before}
    second_half = {k: mem_after[k] - mem_mid[k] for k in mem_before}
    return {
        "machine": device_name(model.device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__,
        "allocator_env": {k: os.environ[k] for k in ALLOCATOR_ENV if k in os.environ},
        "model": model.cfg.name, "arch": repr(model.cfg.arch), "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."), "backend": model.backend.name,
        "clients": args.clients, "seconds": wall_s, "batch_sizes": args.batch_sizes,
        "budgets": args.budgets, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
        "requests": len(records), "ok": len(ok), "errors": len(errors),
        "error_samples": [{k: r[k] for k in ("status", "budget", "detail")} for r in errors[:5]],
        "requests_per_s": len(ok) / wall_s, "images_per_s": sum(r["images"] for r in ok) / wall_s,
        "per_width": [{"width": w, "relative_flops": model.relative_flops(w), "requests": len(ms),
                       "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}
                      for w, ms in sorted(per_width.items(), reverse=True)],
        "memory_before": mem_before, "memory_mid": mem_mid, "memory_after": mem_after, "memory_growth_mib": growth,
        "memory_growth_second_half_mib": second_half,
        "memory_ok": max(second_half.values()) <= args.max_growth_mb,
    }


def markdown(result: dict) -> str:
    mb, ma = result["memory_before"], result["memory_after"]
    mm = result["memory_mid"]
    mem = ", ".join(f"{k} {mb[k]:.0f} -> {mm[k]:.0f} (half time) -> {ma[k]:.0f}" for k in mb)
    lines = [
        f"`{result['model']}` on {result['machine']}, {result['dtype']}, backend {result['backend']}, "
        f"{result['date']}: {result['clients']} loopback clients for {result['seconds']:.1f} s, batches of "
        f"{result['batch_sizes']} images, max_batch {result['max_batch']}, max_wait {result['max_wait_ms']} ms, "
        f"allocator env {result['allocator_env'] or 'default'}",
        "",
        f"{result['requests_per_s']:.2f} requests/s, {result['images_per_s']:.2f} images/s, "
        f"{result['errors']} errors of {result['requests']} requests; memory (MiB) {mem}",
        "",
        "| width | relative FLOPs | requests | p50 | p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['width']:g} | {r['relative_flops']:.1%} | {r['requests']} | {r['p50_ms']:.0f} ms | "
              f"{r['p99_ms']:.0f} ms |" for r in result["per_width"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="satmae")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--arch", type=parse_arch, default={}, help="architecture overrides, e.g. depth=2,dim=128")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="concurrent warm-up before measuring")
    parser.add_argument("--batch-sizes", type=lambda t: [int(b) for b in t.split(",")], default=[1, 2],
                        help="images per request, drawn at random")
    parser.add_argument("--budgets", type=parse_budgets,
                        default=parse_budgets("width=1,width=0.5,flops=0.3,width=0.1,flops=0.05,width=0.01"))
    parser.add_argument("--widths", default="1,0.5,0.25,0.1,0.05,0.04,0.02,0.01",
                        help="candidate widths of flops / latency budgets")
    parser.add_argument("--profile-batches", default="",
                        help="measure a latency profile at these batch sizes first (needed for latency_ms budgets)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request (s)")
    parser.add_argument("--max-growth-mb", type=float, default=16.0,
                        help="memory growth over the second half of the run that counts as a leak")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: latency does not depend on them
        model = slimkern.load(args.model, args.weights, device=args.device, dtype=args.dtype,
                              backend=args.backend, **args.arch)
    engine = slimkern.Engine(model, widths=[float(w) for w in args.widths.split(",")])
    if args.profile_batches:
        engine.profile([int(b) for b in args.profile_batches.split(",")], repeats=3)
    size = model.cfg.arch.img_size
    generator = torch.Generator().manual_seed(0)
    bodies = {b: npy(torch.randn(b, len(model.cfg.bands), size, size, generator=generator))
              for b in args.batch_sizes}
    # every client is on 127.0.0.1: no per-address cap, or more than 16 clients would be refused with 429
    app = create_app(engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                     max_per_client=0)
    with background_server(app) as url:
        warm = asyncio.run(load(url, args, bodies, None))  # every budget and batch size once: graphs, caches
        # then under load, so merged batches of every size have been allocated once before memory is measured
        warm += asyncio.run(load(url, args, bodies, args.warmup_seconds))
        mem_before = memory(model.device)
        start = time.perf_counter()
        records = asyncio.run(load(url, args, bodies, args.seconds / 2))
        mem_mid = memory(model.device)  # a leak grows in both halves; allocator warm-up only in the first
        records += asyncio.run(load(url, args, bodies, args.seconds / 2))
        wall = time.perf_counter() - start
        mem_after = memory(model.device)
    result = report(args, model, records, wall, mem_before, mem_mid, mem_after)
    result["warmup_errors"] = sum(r["status"] != 200 for r in warm)
    text = markdown(result)
    print(text)
    if result["errors"] or result["warmup_errors"]:
        print("errors:", json.dumps(result["error_samples"] or [r for r in warm if r["status"] != 200][:5]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return result


if __name__ == "__main__":
    outcome = main()
    raise SystemExit(0 if outcome["errors"] == 0 and outcome["warmup_errors"] == 0 and outcome["memory_ok"] else 1)
