"""``slimkern serve NAME [--weights PATH]``: the HTTP API in the foreground (uvicorn).

FastAPI and uvicorn are imported only when the command runs, so ``slimkern --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from ..arguments import parse_widths, port_number, positive_int
from ..plan import PAPER_WIDTHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..precision import DTYPE_CHOICES

    parser.add_argument("name", help="a registered model (see `slimkern list`)")
    parser.add_argument("--weights", default=None, help="official checkpoint, or 'pretrained' to download it "
                        "(default: the weights that ship for the model, else random weights with a warning)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=8000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                        help="model dtype (default float32; auto: bfloat16 on CPUs and GPUs with native bfloat16)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--widths", type=parse_widths, default=PAPER_WIDTHS,
                        help="candidate widths for flops/latency budgets: 'paper' (default) or e.g. 1,0.5,0.1")
    parser.add_argument("--profile", default=None, metavar="PATH",
                        help="latency profile JSON for latency_ms budgets: loaded if it exists (re-measured when "
                             "stale), else measured now and written there")
    parser.add_argument("--profile-batches", default="1,4,16", help="batch sizes a new profile measures")
    parser.add_argument("--max-batch", type=positive_int, default=16, help="most images merged into one model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="most unanswered requests (503 beyond)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (413 beyond)")
    parser.add_argument("--max-per-client", type=int, default=16, help="most requests in flight from one client "
                        "address (429 beyond; 0: no cap; behind a proxy raise it to --max-queue)")
    parser.add_argument("--body-timeout-s", type=float, default=60.0,
                        help="longest a request body may take to arrive (408 beyond)")
    parser.add_argument("--workers", type=positive_int, default=2, help="model calls (of different plans) at once")
    parser.add_argument("--max-tokens", type=positive_int, default=None,
                        help="most tokens per image (default: 8x the model's native count); 422 beyond")
    parser.add_argument("--check", choices=("error", "warn", "off"), default="error",
                        help="input check of every request: refuse (422, default), warn, or skip input that does not "
                             "look normalised (raw DN, 8-bit pixels, a constant band)")


def run(args: argparse.Namespace) -> int:
    import os

    from ..extras import require

    require("serve", "slimkern serve")
    import uvicorn

    from ..api import load
    from ..registry import get_cfg
    from ..weights import shipped_path
    from .engine import Engine
    from .server import create_app

    if args.weights is None and shipped_path(get_cfg(args.name)) is None:
        print(f"slimkern serve: warning: no --weights for {args.name}, serving deterministic random weights; "
              "embeddings carry no pretrained meaning", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load's own random-weights warning: said once above
        model = load(args.name, args.weights, device=args.device, dtype=args.dtype, backend=args.backend,
                     max_tokens=args.max_tokens)
    engine = Engine(model, widths=args.widths, check=args.check)
    if args.profile:
        if os.path.exists(args.profile):
            engine.load_profile(args.profile)
        else:
            batches = tuple(int(b) for b in args.profile_batches.split(","))
            print(f"measuring a latency profile (batches {batches}, {len(engine.widths)} widths) ...", flush=True)
            engine.profile(batches, progress=True)
            engine.save_profile(args.profile)
    app = create_app(engine, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                     max_body_bytes=int(args.max_body_mb * 2**20), max_per_client=args.max_per_client,
                     body_timeout_s=args.body_timeout_s, workers=args.workers)
    dtype = str(model.dtype).removeprefix("torch.")
    print(f"serving {model.cfg.name} on {model.device} ({dtype}, backend {model.backend.name}) at "
          f"http://{args.host}:{args.port}/v1/embed", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
