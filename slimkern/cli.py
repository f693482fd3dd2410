"""The ``slimkern`` command: ``list``, ``info NAME``, ``flops NAME --widths ...``, ``doctor``, ``demo``,
``serve NAME``, ``sweep [NAME]``, ``plot DIR...``, ``train NAME``, ``embed NAME SCENE...`` and ``export NAME``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__, demo, doctor
from .api import build_meta
from .arguments import add_raw_input_arguments, parse_bands, parse_widths, positive_int
from .backends import describe_backends
from .extras import MissingExtra, require
from .plan import MODES, PAPER_WIDTHS
from .precision import DTYPE_CHOICES, auto_dtype
from .registry import get_cfg, list_models

INFO_WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.01, 0.001)
#: What each exit status of ``slimkern`` means (also in ``slimkern --help`` and the README).
EXIT_CODES = {
    0: "success",
    1: "a check failed (demo: a width outside its error tolerance)",
    2: "bad arguments or input (unknown model, value out of range, unreadable or refused file)",
    3: "an optional feature is not installed (the message names the pip install to run)",
    4: "an operating-system error (permission, disk full, port in use, out of memory)",
    5: "an unexpected internal error (SLIMKERN_DEBUG=1 shows the traceback; please report it)",
    130: "interrupted (Ctrl-C)",
    141: "the output pipe was closed (e.g. piped into head)",
}


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        cfg = get_cfg(name)
        alias = f" (alias of {cfg.name})" if name != cfg.name else ""
        print(f"{name:<24} {cfg.description}{alias}")
    return 0


def info_dict(model) -> dict:
    """``slimkern info NAME --json``: the model's facts, with its input contract (``model.spec``) in full."""
    cfg, block = model.cfg, model.blocks[0].spec
    return {"name": cfg.name, "aliases": list(cfg.aliases), "family": cfg.family, "description": cfg.description,
            "architecture": {"depth": len(model.blocks), "dim": model.dim, "heads": block.num_heads,
                             "head_dim": block.head_dim, "mlp_hidden": block.mlp_hidden,
                             "layer_norm_eps": block.norm_eps, "img_size": cfg.arch.img_size,
                             "patch_size": cfg.arch.patch_size},
            "run_inputs": list(model.extra_inputs), "input": model.spec.to_dict(), "pooled": cfg.pooled,
            "weights_url": cfg.weights_url, "license": cfg.license, "paper": cfg.paper}


def _spec_lines(spec) -> list[str]:
    units = f"{spec.unit}: model units = (DN + {spec.offset:g}) * {spec.scale:g}" if spec.unit == "DN" else spec.unit
    stats = "" if spec.mean is None else f"; mean {list(spec.mean)}, std {list(spec.std)}"
    lines = [f"  sensor         {spec.sensor} (GSD {'varies' if spec.gsd_m is None else f'{spec.gsd_m:g} m'}, "
             f"{spec.image_size} px, {spec.frames} frame(s); pretrained on {spec.pretraining_data})",
             f"  units          {units}",
             f"  normalisation  {spec.normalization}{stats}",
             f"  wavelengths    {spec.wavelengths.name} table: "
             + ", ".join(f"{b} {w:g}" for b, w in zip(spec.bands, spec.wavelengths_um, strict=True) if w is not None)
             + " um"]
    lines += [f"  choice         {c.name} = {c.value} (options: {', '.join(o.name for o in c.options)})"
              for c in spec.choices]
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    model = build_meta(args.name)
    if args.json:
        print(json.dumps(info_dict(model), indent=2))
        return 0
    cfg, spec = model.cfg, model.blocks[0].spec
    lines = [
        f"{cfg.name}: {cfg.description}",
        f"  aliases        {', '.join(cfg.aliases) or '-'}",
        f"  family         {cfg.family} ({type(model).__name__})",
        f"  architecture   depth {len(model.blocks)}, dim {model.dim}, heads {spec.num_heads} x {spec.head_dim}, "
        f"FFN {spec.mlp_hidden}, qkv bias {spec.qkv_bias}, LayerScale {spec.layer_scale}, LN eps {spec.norm_eps:g}",
        f"  input          {cfg.arch.img_size} px, patch {cfg.arch.patch_size}, "
        f"{model.num_tokens(cfg.arch.img_size, cfg.arch.img_size)} tokens",
        f"  bands          {', '.join(cfg.bands)}" + (" (default; any band set via the inputs below)"
                                                         if model.any_band_count else ""),
        f"  run() inputs   x {' or '.join({4: '[B, C, H, W]', 5: '[B, C, T, H, W]'}[r] for r in model.input_ranks)}"
        + "".join(f", {name}=" for name in model.extra_inputs),
        *_spec_lines(model.spec),
        f"  pooled output  {cfg.pooled}",
        f"  checkpoint     {cfg.weights_url or '-'} (container keys {list(cfg.checkpoint.container_keys)}, "
        f"dropped prefixes {list(cfg.checkpoint.drop_prefixes)})",
        f"  paper          {cfg.paper or '-'}",
        "  backends       " + "\n                 ".join(f"{n}: {line}" for n, line in describe_backends().items()),
        "  dtype 'auto'   " + "; ".join(f"{device}: {auto_dtype(device)}" for device in doctor.devices()),
        "",
    ]
    print("\n".join(lines))
    print_flops_table(model, INFO_WIDTHS, ("attn+ffn",), None)
    return 0


def print_flops_table(model, widths, modes, image_size) -> None:
    header = f"{'mode':<9} {'width':>7} {'d_k':>4} {'d_h':>5} {'GFLOPs':>9} {'relative':>9}"
    print(header)
    print("-" * len(header))
    for mode in modes:
        for width in widths:
            block = model.plan(width, mode).blocks[0]
            flops = model.flops(width, mode=mode, image_size=image_size)
            rel = model.relative_flops(width, mode=mode, image_size=image_size)
            print(f"{mode:<9} {width:>7g} {block.head_dim:>4} {block.mlp_hidden:>5} {flops / 1e9:>9.2f} {rel:>9.2%}")


def cmd_flops(args: argparse.Namespace) -> int:
    if args.all:
        print_all_models(args.widths, args.image_size)
        return 0
    if args.name is None:
        raise ValueError("give a model name (see `slimkern list`) or --all")
    model = build_meta(args.name)
    modes = MODES if args.mode == "all" else (args.mode,)
    print(f"{model.cfg.name}: FLOPs per image (2 x multiply-add, matmuls), "
          f"{args.image_size or model.cfg.arch.img_size} px")
    print_flops_table(model, args.widths, modes, args.image_size)
    return 0


def print_all_models(widths, image_size) -> None:
    """Relative compute of every registered model (canonical names) in all modes, as the paper's model_flops.csv."""
    names = sorted({get_cfg(name).name for name in list_models()})
    print(f"relative compute per model and width (FLOPs(s) / FLOPs(1), "
          f"{'default input sizes' if image_size is None else f'{image_size} px'})")
    header = f"{'model':<26} {'width':>7} {'d_k':>4} {'d_h':>5} {'GFLOPs':>8} {'SASF':>8} {'SA':>8} {'SF':>8}"
    print(header)
    print("-" * len(header))
    for name in names:
        model = build_meta(name)
        for width in widths:
            block = model.plan(width).blocks[0]
            rel = [model.relative_flops(width, mode=mode, image_size=image_size) for mode in MODES]
            print(f"{name:<26} {width:>7g} {block.head_dim:>4} {block.mlp_hidden:>5} "
                  f"{model.flops(width, image_size=image_size) / 1e9:>8.2f} " + " ".join(f"{r:>8.2%}" for r in rel))


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"{code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(prog="slimkern", description="Slimmable inference for RS foundation models.",
                                     epilog=f"exit codes:\n{codes}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"slimkern {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'satmae*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="architecture, input contract, plan table and backends of a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the facts and the full input contract as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("flops", help="d_k', d_h', GFLOPs and relative compute per width and mode")
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--all", action="store_true", help="every registered model (SASF = attn+ffn, SA = attn, SF = ffn)")
    p.add_argument("--widths", type=parse_widths, default=INFO_WIDTHS, help="'paper' or a list like 1,0.5,0.1")
    p.add_argument("--mode", choices=(*MODES, "all"), default="all")
    p.add_argument("--image-size", type=positive_int, default=None, help="input size in px (default: the model's)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("doctor", help="CPU, torch build, backends, the dtype 'auto' picks, and a check of every op "
                       "the runtime uses against float64 (exit code 1 if one computes wrongly here)")
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)

    p = sub.add_parser("demo", help="embed real EuroSAT images at five widths and print latency and errors")
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)

    p = sub.add_parser("sweep", help="accuracy and redundancy vs compute over widths (k-NN / linear probe); "
                       "without arguments: the shipped EuroSAT model on the shipped sample")
    p.add_argument("name", nargs="?", default=None, help="model (default: vit_tiny_eurosat with its shipped weights)")
    p.add_argument("--weights", default=None, help="checkpoint of the model (default: shipped weights of the demo)")
    p.add_argument("--data", default=None, help="class-per-folder image tree (default: the shipped EuroSAT sample)")
    p.add_argument("--labels", default=None, help="multi-label list (JSON or CSV file,labels) for the images in --data")
    p.add_argument("--geobench", default=None, metavar="TASK", help="a local GEO-Bench task, e.g. m-eurosat")
    p.add_argument("--geobench-bands", default=None, help="GEO-Bench band names, comma-separated")
    p.add_argument("--dataset-name", default=None, help="name in the result files (default: the data folder's)")
    p.add_argument("--bands", type=parse_bands, default=None, help="0-based band indices to take, e.g. 3,2,1")
    add_raw_input_arguments(p, "names of the stored bands in file order, e.g. B01,B02,...,B12 (JPEG/PNG: R,G,B); "
                               "the model's bands are then selected and ordered by name")
    p.add_argument("--widths", type=parse_widths, default=PAPER_WIDTHS, help="'paper' (default) or a list")
    p.add_argument("--mode", choices=MODES, default="attn+ffn")
    p.add_argument("--probe", choices=("knn", "linear", "both"), default="both")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..n-1 of the splits and probes")
    p.add_argument("--out", required=True, help="output folder (an interrupted sweep resumes there)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="model dtype (default float32; auto: bfloat16 where the hardware has it, see slimkern doctor)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--no-plot", action="store_true", help="skip the plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="plot sweep folders (one line per folder) as PNG and SVG")
    p.add_argument("folders", nargs="+", help="folders written by `slimkern sweep`")
    p.add_argument("--out", default=None, help="where the plots go (default: the only folder given)")
    p.add_argument("--names", default=None, help="legend names, comma-separated, one per folder (default: models)")
    p.set_defaults(func=cmd_plot)

    from .train import command as train

    p = sub.add_parser("train", help="slimmable fine-tuning (sandwich rule + in-place distillation); writes the "
                       "official checkpoint layout")
    train.add_arguments(p)
    p.set_defaults(func=train.run)

    from .serving import command as serve  # FastAPI and uvicorn are imported only when `serve` runs

    p = sub.add_parser("serve", help="HTTP server: embeddings at a width, FLOPs or latency budget per request")
    serve.add_arguments(p)
    p.set_defaults(func=serve.run)

    from .scene import command as embed  # the scene extra (rasterio, ...) is imported only when `embed` runs

    p = sub.add_parser("embed", help="embed whole scenes (GeoTIFF/COG/JP2) at a width into a COG or GeoParquet")
    embed.add_arguments(p)
    p.set_defaults(func=embed.run)
    from .export import command as export  # onnx and onnxruntime are imported only when `export` runs

    p = sub.add_parser("export", help="one width as a dense, verified artefact: torch.export (pt2), ONNX or "
                       "AOTInductor (aoti)")
    export.add_arguments(p)
    p.set_defaults(func=export.run)
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    require("analysis", "slimkern sweep", ("threadpoolctl", "sklearn", "tifffile")
            + (() if args.no_plot else ("matplotlib",)))  # now, not after minutes of features
    from .analysis.command import sweep_command

    return sweep_command(args)


def cmd_plot(args: argparse.Namespace) -> int:
    require("analysis", "slimkern plot", ("matplotlib",))
    from .analysis.command import plot_command

    return plot_command(args)


def main(argv: list[str] | None = None) -> int:
    """Run ``slimkern ARGS``: every error is one line on stderr with an exit status of :data:`EXIT_CODES`."""
    args = build_parser().parse_args(argv)
    where = f"slimkern {args.command}"
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as an "Exception ignored" message at exit
        return code
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. head) has gone: say nothing, and keep Python from flushing into the pipe at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MissingExtra as err:
        return _fail(where, err, 3)
    except (ValueError, TypeError, NotImplementedError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError) as err:
        return _fail(where, err, 2)
    except (OSError, MemoryError) as err:
        return _fail(where, err, 4)
    except Exception as err:
        if os.environ.get("SLIMKERN_DEBUG"):
            raise
        if type(err).__name__ == "OutOfMemoryError":  # torch's (a RuntimeError): the device, not a bug
            return _fail(where, err, 4)
        return _fail(where, f"internal error: {type(err).__name__}: {_one_line(err)}; set SLIMKERN_DEBUG=1 to see "
                            "the traceback (please report it)", 5, prefix="")


def _one_line(err: BaseException | str) -> str:
    """A multi-line message (e.g. every key a checkpoint lacks) joined into one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = lines[0]
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


def _fail(where: str, err: BaseException | str, code: int, prefix: str = "error: ") -> int:
    print(f"{where}: {prefix}{_one_line(err)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
