"""``slimkern serve NAME [--weights PATH]``: the HTTP API in the foreground (uvicorn).

FastAPI and uvicorn are imported only when the command runs, so ``slimkern --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from ..plan import PAPER_WIDTHS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..cli import parse_widths

    parser.add_argument("name", help="a registered model (see `slimkern list`)")
    parser.add_argument("--weights", default=None, help="official checkpoint (default: random weights, with a warning)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--widths", type=parse_widths, default=PAPER_WIDTHS,
                        help="candidate widths for flops/latency budgets: 'paper' (default) or e.g. 1,0.5,0.1")
    parser.add_argument("--profile", default=None, metavar="PATH",
                        help="latency profile JSON for latency_ms budgets: loaded if it exists (re-measured when "
                             "stale), else measured now and written there")
    parser.add_argument("--profile-batches", default="1,4,16", help="batch sizes a new profile measures")
    parser.add_argument("--max-batch", type=int, default=16, help="most images merged into one model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    parser.add_argument("--max-queue", type=int, default=64, help="most unanswered requests (503 beyond)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (413 beyond)")
    parser.add_argument("--workers", type=int, default=2, help="model calls (of different plans) at once")
    parser.add_argument("--check", choices=("error", "warn", "off"), default="error",
                        help="input check of every request: refuse (422, default), warn, or skip input that does not "
                             "look normalised (raw DN, 8-bit pixels, a constant band)")


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from ..api import load
    from .engine import Engine
    from .server import create_app

    if args.weights is None:
        print(f"slimkern serve: warning: no --weights for {args.name}, serving deterministic random weights; "
              "embeddings carry no pretrained meaning", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load's own random-weights warning: said once above
        model = load(args.name, args.weights, device=args.device, dtype=DTYPES[args.dtype], backend=args.backend)
    engine = Engine(model, widths=args.widths, check=args.check)
    if args.profile:
        if os.path.exists(args.profile):
            engine.load_profile(args.profile)
        else:
            batches = tuple(int(b) for b in args.profile_batches.split(","))
            print(f"measuring a latency profile (batches {batches}, {len(engine.widths)} widths) ...", flush=True)
            engine.profile(batches)
            engine.save_profile(args.profile)
    app = create_app(engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                     max_body_bytes=int(args.max_body_mb * 2**20), workers=args.workers)
    print(f"serving {model.cfg.name} on {model.device} ({args.dtype}, backend {model.backend.name}) at "
          f"http://{args.host}:{args.port}/v1/embed", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
