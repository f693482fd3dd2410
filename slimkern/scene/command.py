"""``slimkern embed NAME SCENE... --width 0.1 --out OUT``: whole scenes to COG or GeoParquet, locally or on Ray.

The arguments are defined here and registered in :mod:`slimkern.cli`; this module imports nothing of the
``scene`` extra until the command runs, so ``slimkern --help`` works without it.
"""

from __future__ import annotations

import argparse
import warnings

from ..plan import MODES


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..arguments import add_raw_input_arguments
    from ..input_check import CHECK_MODES

    p.add_argument("name", help="model (slimkern list); vit_tiny_eurosat uses its shipped weights by default")
    p.add_argument("scenes", nargs="+", metavar="SCENE",
                   help="raster file, folder of per-band files (Sentinel-2 SAFE or *_B04.tif), B04=a.tif,B03=b.tif, "
                        "or a list file (.txt: one scene a line; .json: paths, {id, bands} or STAC-like items)")
    p.add_argument("--out", required=True, help="output: .tif (Cloud-Optimized GeoTIFF) or .parquet (GeoParquet); "
                   "several scenes need a template with {scene}, e.g. emb/{scene}.tif")
    p.add_argument("--width", type=float, default=1.0, help="slimming factor in (0, 1] (default 1.0)")
    p.add_argument("--per", choices=("chip", "patch"), default="chip",
                   help="one pooled embedding per chip (default) or token embeddings on the patch grid")
    p.add_argument("--crop", type=int, default=None, help="chip size in pixels (default: the model's input size)")
    p.add_argument("--stride", type=int, default=None, help="step between chips (default: --crop, no overlap)")
    p.add_argument("--batch-size", type=int, default=32, help="chips per forward pass (default 32)")
    add_raw_input_arguments(p, "names of a single-file scene's bands in file order, e.g. B04,B03,B02,B08 (default: "
                               "the file's band descriptions); the model's bands are selected by name (model.prepare)")
    p.add_argument("--add-offset", type=float, default=0.0,
                   help="added to DN first: -1000 for Sentinel-2 products of processing baseline 04.00 or later")
    p.add_argument("--check", choices=CHECK_MODES, default="error",
                   help="input plausibility check on the chips without nodata: refuse (default), warn, or skip input "
                        "that does not look like the model's (wrong --units, raw DN)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="output values")
    p.add_argument("--weights", default=None, help="checkpoint (default: shipped weights of vit_tiny_eurosat, "
                   "random weights with a warning for other models)")
    p.add_argument("--mode", choices=MODES, default="attn+ffn")
    p.add_argument("--readers", type=int, default=2, help="reader threads (default 2)")
    p.add_argument("--prefetch", type=int, default=2, help="blocks of chips read ahead (default 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs and unfinished other jobs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the scenes on Ray Data: a local cluster, or ADDRESS (e.g. auto, ray://head:10001)")
    p.add_argument("--concurrency", type=int, default=2, help="Ray actors, one model each (default 2)")


def run(args: argparse.Namespace) -> int:
    from . import require_extra

    require_extra()
    from .catalog import expand_scenes, output_path
    from .pipeline import embed_scene
    scenes = expand_scenes(args.scenes)
    weights = args.weights
    if weights is None and args.name == "vit_tiny_eurosat":
        from ..zoo.eurosat_vit import WEIGHTS

        weights = str(WEIGHTS)
    options = dict(width=args.width, per=args.per, crop=args.crop, stride=args.stride, batch_size=args.batch_size,
                   bands=args.band_names, units=args.units, add_offset=args.add_offset, check=args.check,
                   mode=args.mode,
                   dtype=args.dtype, readers=args.readers, prefetch=args.prefetch, overwrite=args.overwrite)
    outputs = [output_path(args.out, scene["id"], len(scenes)) for scene in scenes]
    if args.ray is not None:
        return _run_ray(args, scenes, weights, options)
    import slimkern

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        model = slimkern.load(args.name, weights=weights, device=args.device, backend=args.backend)
    for scene, out in zip(scenes, outputs, strict=True):
        result = embed_scene(model, scene["source"], scene_id=scene["id"], out=out, progress=not args.quiet,
                             **options)
        if result.already_done:
            print(f"{result.scene}: {out} is already complete")
            continue
        s = result.seconds
        print(f"{result.scene}: {result.embedded} chips embedded, {result.skipped} without data"
              + (f", {result.resumed_blocks} blocks resumed" if result.resumed_blocks else "")
              + f"; width {args.width:g} ({result.relative_flops:.1%} of the FLOPs); {result.chips_per_s:.1f} chips/s; "
              f"{s['total']:.1f} s (read {s['read']:.1f}, waiting for data {s['wait']:.1f}, model {s['model']:.1f}, "
              f"write {s['write']:.1f}, output file {s['finalize']:.1f}) -> {out}")
    return 0


def _run_ray(args: argparse.Namespace, scenes: list[dict], weights: str | None, options: dict) -> int:
    from ..extras import require

    require("ray", "slimkern embed --ray", ("ray", "ray.data"))
    import ray

    from .ray_data import embed_scenes_ray

    ray.init(address=None if args.ray == "local" else args.ray)
    try:
        records = embed_scenes_ray(args.name, scenes, args.out, weights=weights, device=args.device,
                                   backend=args.backend, concurrency=args.concurrency,
                                   num_gpus=1 if args.device.startswith("cuda") else 0, **options)
    finally:
        ray.shutdown()
    for r in records:
        state = "already complete" if r["already_done"] else f"{r['embedded']} chips embedded, {r['skipped']} " \
                f"without data, {r['seconds']:.1f} s"
        print(f"{r['scene']}: {state} -> {r['out']}")
    return 0
