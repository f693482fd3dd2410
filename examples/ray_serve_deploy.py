"""Scale-out on Ray Serve: one slimkern replica per GPU, each with one copy of the weights, budgets per request.

    pip install -e ".[serve,ray]"
    python examples/ray_serve_deploy.py --weights fmow_pretrain.pth --replicas 2     # one replica per GPU
    python examples/ray_serve_deploy.py --replicas 2 --cpu                            # no GPU: random weights, CPU

The script starts (or joins, with RAY_ADDRESS) a Ray cluster, deploys the replicas behind Ray's HTTP proxy at
http://127.0.0.1:8000/embed (same body and query parameters as ``slimkern serve``'s /v1/embed), sends a few
mixed-budget requests through a Python handle and one over HTTP, and keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import time

import httpx
import numpy as np
import ray
from ray import serve

from slimkern.serving.ray_serve import build_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="satmae")
    parser.add_argument("--weights", default=None, help="official checkpoint (default: random weights)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="one CPU per replica instead of one GPU")
    parser.add_argument("--dtype", default="bfloat16", help="float32 on --cpu")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    ray.init()  # joins RAY_ADDRESS if set, else starts a local instance
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    app = build_app(args.model, args.weights, num_replicas=args.replicas,
                    ray_actor_options={"num_cpus": 1} if args.cpu else {"num_gpus": 1},
                    dtype="float32" if args.cpu else args.dtype, widths=(1.0, 0.5, 0.25, 0.1, 0.05, 0.01))
    handle = serve.run(app, name="slimkern", route_prefix="/embed")

    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)  # normalised inputs
    for budget in ({"width": 1.0}, {"flops": 0.3}, {"flops": 0.05}, {"width": 0.01}):
        result = handle.embed.remote(x, **budget).result()
        print(f"{budget}: width {result['width']:g}, {result['relative_flops']:.1%} of the FLOPs, "
              f"embeddings {result['embeddings'].shape}, replica pid {result['replica']}")

    body = io.BytesIO()
    np.save(body, x)
    r = httpx.post(f"http://127.0.0.1:{args.port}/embed", content=body.getvalue(), params={"flops": 0.1},
                   headers={"content-type": "application/x-npy"}, timeout=300)
    print("HTTP:", r.status_code, r.headers.get("x-slimkern-width"), np.load(io.BytesIO(r.content)).shape)

    print(f"serving at http://127.0.0.1:{args.port}/embed; Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


if __name__ == "__main__":
    main()
