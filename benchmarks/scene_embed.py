"""Whole-scene embedding: chips/s and scene time per width, where the time goes, and peak memory vs scene size.

    python -m benchmarks.scene_embed                                  # 10,980^2 and 1,024^2 x 4 bands, 3 widths
    python -m benchmarks.scene_embed --big 4096 --widths 0.1 --per patch --dtype float16
    nice python -m benchmarks.scene_embed --big-widths 0.1 --name cpu-...-scene-per-chip   # big scene at 0.1 only

Two synthetic 4-band (B, G, R, N) uint8 scenes, deflate-compressed 512 px tiles like a Sentinel-2 COG, are
written once to ``--cache``. Each job runs ``slimkern.embed_scene`` with ``vit_tiny_eurosat`` (shipped weights,
64 px chips, bands R, G, B picked by name by ``model.prepare``) in a fresh process, which reports the pipeline's
time split and its peak RSS (``ru_maxrss``) next to its RSS before the job (Python, torch, the model). Times
are wall clock: ``read`` is the reader threads' time (overlapped with the model), ``wait`` the part the model
waited for data, ``model`` preparation and forward passes, ``write`` storing finished blocks (writer thread),
``output`` building the COG/GeoParquet at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def write_scene(path: Path, size: int) -> None:
    """A smooth field plus noise per band, so the tiles compress like imagery rather than like random bytes."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", height=size, width=size, count=4, dtype="uint8", crs="EPSG:32632",
                   transform=from_origin(600_000, 5_300_040, 10, 10), tiled=True, blockxsize=512, blockysize=512,
                   compress="DEFLATE", interleave="pixel", BIGTIFF="IF_SAFER")
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.descriptions = ("B", "G", "R", "N")
        for row in range(0, size, 512):
            rows = min(512, size - row)
            y = np.arange(row, row + rows)[:, None] / 300
            x = np.arange(size)[None] / 300
            for band in range(4):
                field = 100 + 60 * np.sin(x * (band + 1) + y) * np.cos(y * 0.7 - x * 0.3 * band)
                noise = rng.normal(0, 12, (rows, size))
                dst.write(np.clip(field + noise, 1, 255).astype(np.uint8), band + 1, window=Window(0, row, size, rows))
    tmp.rename(path)


def child(args: argparse.Namespace) -> None:
    """One job in this process; prints a JSON line."""
    import warnings

    import slimkern
    import slimkern.scene.pipeline  # noqa: F401  (rasterio, pyarrow, ...: counted in the RSS before the job)
    from slimkern.zoo.eurosat_vit import WEIGHTS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)
    base = _rss_mb()
    start = time.perf_counter()
    result = slimkern.embed_scene(model, args.scene, args.width, out=args.out, per=args.per, dtype=args.dtype,
                                  batch_size=args.batch_size, progress=False)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"embedded": result.embedded, "chips": result.chips, "relative_flops": result.relative_flops,
                      "seconds": {**result.seconds, "wall": wall}, "rss_before_mb": base, "rss_peak_mb": peak,
                      "output_mb": Path(args.out).stat().st_size / 2**20}))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_job(scene: Path, width: float, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"{scene.stem}-{width:g}-{args.per}{args.suffix}"
    command = [sys.executable, "-m", "benchmarks.scene_embed", "--child", "--scene", str(scene), "--out", str(out),
               "--width", str(width), "--per", args.per, "--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    record = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=10980)
    parser.add_argument("--small", type=int, default=1024)
    parser.add_argument("--widths", default="1,0.25,0.1")
    parser.add_argument("--big-widths", default=None, help="widths of the big scene (default: --widths)")
    parser.add_argument("--per", choices=("chip", "patch"), default="chip")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--suffix", choices=(".tif", ".parquet"), default=".tif")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "slimkern-scene-bench"))
    parser.add_argument("--name", default=None, help="result file stem under benchmarks/results (default: none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for size in (args.small, args.big):
        scenes[size] = cache / f"scene-{size}.tif"
        if not scenes[size].exists():
            print(f"writing the {size} x {size} x 4 scene to {scenes[size]} (once)", flush=True)
            write_scene(scenes[size], size)
    rows, load_start = [], os.getloadavg()
    with tempfile.TemporaryDirectory(dir=cache) as work:
        for size in (args.small, args.big):  # the small scene first: every width has a row early
            widths = args.big_widths if size == args.big and args.big_widths else args.widths
            for width in (float(w) for w in widths.split(",")):
                record = run_job(scenes[size], width, args, Path(work))
                rows.append({"size": size, "width": width, **record})
                s = record["seconds"]
                print(f"{size:>6} px  width {width:<5g} {record['embedded']:>6} chips  "
                      f"{record['embedded'] / s['total']:7.1f} chips/s  {s['total']:7.1f} s  (read {s['read']:.1f}, "
                      f"wait {s['wait']:.1f}, model {s['model']:.1f}, write {s['write']:.1f}, output "
                      f"{s['finalize']:.1f})  RSS {record['rss_before_mb']:.0f} -> {record['rss_peak_mb']:.0f} MB",
                      flush=True)
                report = {"machine": f"{_cpu_name()}, {os.cpu_count()} cores (shared)",
                          "date": datetime.date.today().isoformat(), "model": "vit_tiny_eurosat (shipped weights)",
                          "per": args.per, "dtype": args.dtype, "format": args.suffix, "batch_size": args.batch_size,
                          "load_average_start": load_start, "load_average_end": os.getloadavg(), "rows": rows}
                if args.name:  # after every job, so a long run leaves its finished rows
                    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1))
                    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = [f"# Whole-scene embedding: vit_tiny_eurosat, per {report['per']}, {report['dtype']} "
             f"{report['format']}, batch {report['batch_size']} ({report['date']}, {report['machine']})", "",
             "| scene | width | rel FLOPs | chips | chips/s | scene s | read s | wait s | model s | write s | "
             "output s | RSS before MB | peak RSS MB |", "| --- " * 13 + "|"]
    load = [f"{report[k][0]:.1f}" for k in ("load_average_start", "load_average_end")]
    for r in report["rows"]:
        s = r["seconds"]
        lines.append(f"| {r['size']}^2 | {r['width']:g} | {r['relative_flops']:.1%} | {r['embedded']} | "
                     f"{r['embedded'] / s['total']:.1f} | {s['total']:.1f} | {s['read']:.1f} | {s['wait']:.1f} | "
                     f"{s['model']:.1f} | {s['write']:.1f} | {s['finalize']:.1f} | {r['rss_before_mb']:.0f} | "
                     f"{r['rss_peak_mb']:.0f} |")
    lines += ["", f"Load average (1 min) at start / end: {load[0]} / {load[1]} on {os.cpu_count()} cores shared with "
              "other jobs, so absolute times are noisy; compare widths and scene sizes within this table."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
