"""Scale-out on Ray Serve: one replica per GPU, each with one copy of the weights, the budget routed per request.

Each replica loads the model once, wraps it in an :class:`~slimkern.serving.engine.Engine` and serves it through
the same :class:`~slimkern.serving.server.EmbedService` as ``slimkern serve`` (budgets, dynamic batching per plan,
bounded queue, 4xx for bad input), so a request's width does not depend on which replica answers it.

- Python: ``handle.embed.remote(x, flops=0.05)`` with ``x`` a numpy array ``[B, C, H, W]`` -> a dict with
  ``embeddings`` (numpy float32), the ``width``, ``relative_flops``, ``plan``, ``mode`` and ``budget`` used and the
  ``provenance``.
- HTTP: ``POST {route_prefix}`` with the body and query parameters of ``/v1/embed``.

``ray`` is imported when :func:`build_app` runs, not when this module is imported.

>>> app = build_app("satmae", weights="fmow_pretrain.pth", num_replicas=2)   # doctest: +SKIP
>>> handle = serve.run(app)                                                  # doctest: +SKIP
>>> handle.embed.remote(x, flops=0.05).result()["width"]                     # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from starlette.requests import Request
from starlette.responses import Response

from ..plan import PAPER_WIDTHS
from .codecs import array_to_tensor
from .engine import Engine
from .server import EmbedService

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SlimkernReplica:
    """One Ray Serve replica: the model loaded once, all budgets served from it.

    Args:
        name, weights: as :func:`slimkern.load` (``weights=None``: random weights, with a warning).
        device: ``"auto"``: the replica's GPU if Ray gave it one, else the CPU.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        widths: candidate widths of flops / latency budgets.
        profile: a latency profile JSON (used if it matches this replica's device, re-measured otherwise).
        arch: architecture overrides (``depth=2`` ...), as ``slimkern.load(**arch)``; for tests and experiments.
        service: options of :class:`EmbedService` (``max_batch``, ``max_wait_ms``, ``max_queue``, ...).
    """

    def __init__(self, name: str, weights: str | None = None, *, device: str = "auto", dtype: str = "float32",
                 widths: tuple[float, ...] = PAPER_WIDTHS, profile: str | None = None,
                 arch: dict[str, Any] | None = None, service: dict[str, Any] | None = None) -> None:
        from ..api import load

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with warnings.catch_warnings():
            if weights is None:
                warnings.simplefilter("ignore")  # random weights are what the caller asked for
            model = load(name, weights, device=device, dtype=DTYPES[dtype], **(arch or {}))
        self.engine = Engine(model, widths=widths)
        if profile is not None and os.path.exists(profile):
            self.engine.load_profile(profile)
        self.service = EmbedService(self.engine, **(service or {}))

    async def embed(self, x: np.ndarray, **params: Any) -> dict[str, Any]:
        """Embeddings of ``x`` (normalised ``[B, C, H, W]``, or raw with ``bands``) under ``params``: one of
        ``width``, ``flops``, ``latency_ms``, and ``mode``, ``output``, ``normalize``, ``bands``, ``units``. Bad input
        raises the model's ``ValueError`` / ``TypeError`` (Ray re-raises it at the caller)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a floating-point numpy array [B, C, H, W], got {type(x).__name__}")
        x = x if x.flags.writeable else x.copy()  # Ray hands over read-only arrays
        # float16/32/64 of either byte order, as /v1/embed's npy bodies (a big-endian array failed in from_numpy)
        out, meta = await self.service.embed_tensor(array_to_tensor(x), params)
        return {"embeddings": out.float().cpu().numpy(), "replica": os.getpid(), **meta}

    async def __call__(self, request: Request) -> Response:
        """HTTP: the same request and response as ``POST /v1/embed``."""
        response, _ = await self.service.embed(request)
        return response


def build_app(name: str, weights: str | None = None, *, num_replicas: int = 1,
              ray_actor_options: dict[str, Any] | None = None, **replica_options: Any):
    """A Ray Serve application of ``num_replicas`` :class:`SlimkernReplica` (run it with ``serve.run``).

    ``ray_actor_options`` default to one GPU per replica when this machine has one (``{"num_gpus": 1}``), else
    one CPU; ``replica_options`` go to :class:`SlimkernReplica`.
    """
    from ray import serve

    if ray_actor_options is None:
        ray_actor_options = {"num_gpus": 1} if torch.cuda.is_available() else {"num_cpus": 1}
    deployment = serve.deployment(SlimkernReplica, name="slimkern", num_replicas=num_replicas,
                                  ray_actor_options=ray_actor_options)
    return deployment.bind(name, weights, **replica_options)
