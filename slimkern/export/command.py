"""``slimkern export NAME --width S --format pt2|onnx|aoti --out PATH``: one width as a verified deployment artefact."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch

from ..plan import MODES
from .formats import FORMATS

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_constant(text: str) -> tuple[str, object]:
    """``NAME=VALUE``: VALUE as JSON (``0.5``, ``[[2021, 152]]``) or a comma-separated list (``0.665,0.56,VV``)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"--constant takes NAME=VALUE (e.g. res=0.5, wavelengths=0.665,0.56,0.49); "
                                         f"got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, [_number_or_name(v) for v in value.split(",")]


def _number_or_name(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text.strip()  # a SAR band name (Panopticon)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a registered model (see `slimkern list`)")
    parser.add_argument("--weights", default=None, help="official checkpoint (default: random weights, with a warning)")
    parser.add_argument("--width", type=float, required=True, help="slimming factor s in (0, 1]")
    parser.add_argument("--mode", choices=MODES, default="attn+ffn")
    parser.add_argument("--output", choices=("pooled", "tokens"), default="pooled")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="pt2 (torch.export), onnx, aoti (AOTInductor package compiled for this CPU)")
    parser.add_argument("--out", required=True, help="file to write (.onnx for onnx, .pt2 for pt2 and aoti)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--image-size", type=int, default=None, help="fixed input size in px (default: the model's)")
    parser.add_argument("--frames", type=int, default=None, help="Prithvi: frames T of a [B, C, T, H, W] input "
                        "(default: single images [B, C, H, W])")
    parser.add_argument("--bands", type=int, default=None,
                        help="input bands of band-flexible models (CROMA: 12 optical, 2 radar, 14 joint)")
    parser.add_argument("--input", action="append", default=None, dest="inputs", metavar="NAME",
                        help="a per-image run() input that becomes a graph input after x (repeatable; default: "
                             "those the model needs, e.g. Prithvi TL's coordinates)")
    parser.add_argument("--constant", action="append", type=parse_constant, default=[], dest="constants",
                        metavar="NAME=VALUE", help="a run() input baked into the graph: one image's value or the "
                        "band set's wavelengths/bandwidths (repeatable)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the artefact in its runtime and comparing it with run()")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .exporter import ExportError

    try:
        return _export(args)
    except ExportError as err:  # a failed step: one line (a missing extra or a bad path: slimkern.cli's exit codes)
        print(f"slimkern export: error: {err} (slimkern.export(...) in Python shows the cause)", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    from ..api import load
    from .exporter import export
    if args.weights is None:
        print(f"slimkern export: warning: no --weights for {args.name}, exporting deterministic random weights",
              file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load's own random-weights warning: said once above
        model = load(args.name, args.weights, dtype=DTYPES[args.dtype])
    result = export(model, args.width, args.out, format=args.format, mode=args.mode, output=args.output,
                    image_size=args.image_size, frames=args.frames, bands=args.bands,
                    inputs=tuple(args.inputs) if args.inputs is not None else None, constants=dict(args.constants),
                    verify=not args.no_verify, progress=not args.quiet)
    meta = result.metadata
    print(f"wrote {', '.join(result.files)} ({result.bytes / 2**20:.1f} MiB, {result.format}, {meta['dtype']})")
    print(f"  {meta['model']} width {meta['width']} ({meta['mode']}, {meta['plan']}), {int(meta['flops']) / 1e9:.3g} "
          f"GFLOPs per image ({float(meta['relative_flops']):.1%} of width 1)")
    inputs = ", ".join(f"{i['name']} {i['shape']}" for i in json.loads(meta["inputs"]))
    print(f"  inputs {inputs} (B in {meta['batch']}) -> output {json.loads(meta['output_shape'])}")
    if result.errors:
        errors = ", ".join(f"batch {b}: {e:.2g}" for b, e in result.errors.items())
        print(f"  verified against run(): relative error {errors} (tolerance {result.tolerance:g})")
    else:
        print("  not verified (--no-verify)")
    print("  " + ", ".join(f"{step} {s:.1f} s" for step, s in result.seconds.items()))
    return 0
