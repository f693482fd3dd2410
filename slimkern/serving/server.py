"""The HTTP API (FastAPI): ``POST /v1/embed``, ``GET /v1/models``, ``GET /healthz``, ``GET /metrics``.

``POST /v1/embed`` takes a NORMALISED batch ``[B, C, H, W]`` as ``model.run`` does; or RAW values with ``bands``
(their names in order, e.g. ``bands=B04,B03,B02``) and optionally ``units`` (``DN``, ``reflectance``, ``dB``,
``linear``) and ``add_offset``, which :meth:`~slimkern.SlimModel.prepare` turns into the model's input; or values in
the model's units (``model.spec``) with ``normalize=true``. At most one budget: ``width``, ``flops`` or
``latency_ms`` (none: the full model). These parameters come from the query string or, for JSON bodies, from the
body. Encodings: :mod:`slimkern.serving.codecs`. Every answer carries its provenance (model, checkpoint hash, width,
input contract used, dtype, device, backend, library versions).

Status codes: 400 undecodable body, 406 unwritable Accept, 413 body over ``max_body_bytes``, 415 unknown
Content-Type, 422 a well-formed request the model refuses (bands, shape, size, NaN/Inf, input that does not look
normalised, width or budget out of range, unmeetable budget), 503 + ``Retry-After`` when ``max_queue`` requests
are unanswered. Each error body is ``{"detail": "what was wrong and what is expected"}``; the server keeps serving.

A ``latency_ms`` budget is resolved for the request's own batch size (the engine's profile); the request may then
wait up to ``max_wait_ms`` and run merged with other requests of the same plan, which the budget does not cover.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..checks import OUTPUTS
from ..plan import MODES
from ..prepare import Prepared
from .batcher import DynamicBatcher, Pending, QueueFull
from .codecs import NotAcceptable, PayloadError, UnsupportedMediaType, decode, encode, media_type, response_kind
from .engine import Choice, Engine

BUDGETS = ("width", "flops", "latency_ms")
RAW = ("bands", "units", "add_offset")  # parameters of raw input, which the server prepares
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# from a GPU replay of a small batch (ms) to a ViT-L batch on a CPU (tens of seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BodyTooLarge(ValueError):
    """A request body over the server's limit (HTTP 413)."""


class EmbedService:
    """The logic of ``POST /v1/embed`` around one engine and its batcher, shared by the FastAPI app and the Ray
    Serve replica: decode, check, resolve the budget, batch, encode; every refusal a status with its reason.

    Args:
        engine: the :class:`Engine` around the one loaded model.
        max_batch, max_wait_ms: dynamic batching (see :class:`~slimkern.serving.batcher.DynamicBatcher`).
        max_queue: most unanswered requests; beyond it requests get 503 with ``Retry-After: retry_after_s``.
        max_body_bytes: largest request body (413 beyond).
        workers: batches that run at once (threads).
        on_batch: called with every batch's size (metrics).
    """

    def __init__(self, engine: Engine, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 64,
                 max_body_bytes: int = 64 << 20, workers: int = 2, retry_after_s: int = 1,
                 on_batch: Callable[[int], None] | None = None) -> None:
        model = engine.model
        if model.extra_inputs:
            raise NotImplementedError(f"{model.cfg.name} needs extra inputs ({', '.join(model.extra_inputs)}); the "
                                      "HTTP API serves models whose run() takes only x")
        self.engine = engine
        self.max_queue = max_queue
        self.in_flight = 0  # requests from their first byte to their answer (reading, decoding, queued, running)
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.batcher = DynamicBatcher(self._run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                      max_queue=max_queue, workers=workers, on_batch=on_batch)

    def _run_batch(self, items: list[Pending], x: torch.Tensor) -> torch.Tensor:
        choice, output = items[0].tag  # every item of a batch has the same plan, so the same result
        # to the host here, in the worker thread: a GPU sync in the event loop would stall every other request
        return self.engine.execute(x, choice, output, checked=True).cpu()  # each request was checked alone

    async def embed_tensor(self, x: torch.Tensor, params: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Embeddings of one request's batch ``x`` with ``params`` (budget, mode, output, normalize, bands, units,
        add_offset), batched with other requests of the same plan, and their metadata (:meth:`metadata`). Raises the
        engine's ``ValueError``/``TypeError`` and :class:`QueueFull`."""
        out, choice, prepared = await self._embed_checked(x, _params({}, params))
        return out, self.metadata(choice, prepared)

    async def _embed_checked(self, x: torch.Tensor, params: dict[str, Any]
                             ) -> tuple[torch.Tensor, Choice, Prepared | None]:
        x, choice, prepared = await asyncio.to_thread(_prepare, self.engine, x, params)
        key = (choice.plan, tuple(x.shape[1:]), params["output"])
        out = await self.batcher.submit(key, x, tag=(choice, params["output"]), cost=choice.relative_flops)
        return out, choice, prepared

    def metadata(self, choice: Choice, prepared: Prepared | None = None) -> dict[str, Any]:
        """What an answer says about itself: the width used (:func:`choice_meta`) and its provenance."""
        provenance = self.engine.model.provenance(width=choice.width, mode=choice.plan.mode, prepared=prepared)
        return {**choice_meta(choice), "provenance": provenance}

    async def embed(self, request: Request) -> tuple[Response, Choice | None]:
        """Answer one HTTP request: the response and, when it succeeded, the :class:`Choice` made.

        ``max_queue`` bounds the requests in flight from their first byte: counting them only once queued in the
        batcher would let any number of bodies be read and decoded (up to ``max_body_bytes`` each) before a 503."""
        if self.in_flight >= self.max_queue:
            err = QueueFull(f"the server holds {self.in_flight} unanswered requests (max_queue={self.max_queue}); "
                            "retry later")
            return _error(503, err, {"Retry-After": str(self.retry_after_s)}), None
        self.in_flight += 1
        try:
            return await self._embed(request)
        finally:
            self.in_flight -= 1

    async def _embed(self, request: Request) -> tuple[Response, Choice | None]:
        try:
            body = await _read_body(request, self.max_body_bytes)
            kind = media_type(request.headers.get("content-type"))
            answer_in = response_kind(request.headers.get("accept"), kind)
            x, fields = await asyncio.to_thread(decode, body, kind)  # parsing megabytes of JSON: off the event loop
            out, choice, prepared = await self._embed_checked(x, _params(dict(request.query_params), fields))
        except BodyTooLarge as err:
            return _error(413, err), None
        except UnsupportedMediaType as err:
            return _error(415, err), None
        except NotAcceptable as err:
            return _error(406, err), None
        except PayloadError as err:
            return _error(400, err), None
        except QueueFull as err:
            return _error(503, err, {"Retry-After": str(self.retry_after_s)}), None
        except (ValueError, TypeError) as err:  # the model's and the engine's checks: bands, NaN, size, budgets
            return _error(422, err), None
        meta = self.metadata(choice, prepared)
        headers = {f"X-Slimkern-{k.replace('_', '-').title()}": header_value(v) for k, v in meta.items()}
        return Response(encode(out, answer_in, meta), media_type=answer_in, headers=headers), choice

    def shutdown(self) -> None:
        self.batcher.shutdown()


def choice_meta(choice: Choice) -> dict[str, Any]:
    """What a response says about the width used."""
    return {"width": choice.width, "relative_flops": choice.relative_flops, "plan": choice.plan.summary(),
            "mode": choice.plan.mode, "budget": choice.budget}


def header_value(value: Any) -> str:
    """A metadata value as an HTTP header (and safetensors metadata) value: dicts as compact ASCII JSON."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)


def _error(status: int, err: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=status, headers=headers)


def create_app(engine: Engine, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 64,
               max_body_bytes: int = 64 << 20, workers: int = 2, retry_after_s: int = 1) -> FastAPI:
    """The FastAPI app serving ``engine`` (run it with uvicorn, or ``slimkern serve``); arguments as
    :class:`EmbedService`. Metrics go to a registry of the app's own (``app.state.registry``)."""
    model = engine.model
    registry = CollectorRegistry()
    requests = Counter("slimkern_requests", "Requests to /v1/embed by HTTP status", ["status"], registry=registry)
    latency = Histogram("slimkern_request_latency_seconds",
                        "Time from request to response of /v1/embed, by candidate width (any other width: other)",
                        ["width"], buckets=LATENCY_BUCKETS, registry=registry)
    batch_sizes = Histogram("slimkern_batch_size", "Images per model call after dynamic batching",
                            buckets=BATCH_BUCKETS, registry=registry)
    queue_depth = Gauge("slimkern_queue_depth", "Admitted, unanswered requests", registry=registry)
    service = EmbedService(engine, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                           max_body_bytes=max_body_bytes, workers=workers, retry_after_s=retry_after_s,
                           on_batch=batch_sizes.observe)
    batcher = service.batcher
    candidates = frozenset(engine.widths)
    queue_depth.set_function(lambda: batcher.depth)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.shutdown()

    app = FastAPI(title="slimkern", summary="one checkpoint, any compute budget", lifespan=lifespan)
    app.state.engine, app.state.batcher, app.state.registry = engine, batcher, registry

    @app.post("/v1/embed")
    async def embed(request: Request) -> Response:
        start = time.perf_counter()
        response, choice = await service.embed(request)
        requests.labels(str(response.status_code)).inc()
        if choice is not None:  # label values bounded by the candidates: a client's width=0.123457 is "other"
            label = f"{choice.width:g}" if choice.width in candidates else "other"
            latency.labels(label).observe(time.perf_counter() - start)
        return response

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        cfg = model.cfg
        profile = engine.latency_profile
        return {"data": [{
            "id": cfg.name,
            "description": cfg.description,
            "input": {
                "layout": "[B, C, H, W]",
                "normalised": "send normalised input; or raw values with bands=B04,B03,B02 (their names, in order) "
                              "and units=DN|reflectance|dB|linear, which the server prepares as spec says; or "
                              "values in model units with normalize=true",
                "bands": list(cfg.bands), "mean": list(cfg.mean), "std": list(cfg.std),
                "image_size": cfg.arch.img_size, "patch_size": cfg.arch.patch_size,
                "spec": model.spec.to_dict(),
            },
            "embedding_dim": model.dim, "pooled": cfg.pooled,
            "modes": list(MODES), "outputs": list(OUTPUTS),
            "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
            "backend": model.backend.name,
            "widths": [{"width": w, "relative_flops": engine.relative_flops(w), "plan": model.plan(w).summary()}
                       for w in engine.widths],
            "latency_profile": None if profile is None else {
                "batch_sizes": profile.batch_sizes, "mode": profile.mode, "image_size": list(profile.image_size),
                "device": profile.fingerprint["device"]},
            "limits": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue,
                       "max_body_bytes": max_body_bytes},
        }]}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model.cfg.name, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it (or its declared Content-Length) passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {int(declared)} bytes is over the limit of {limit} bytes; "
                           "send smaller batches")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _params(query: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
    """Budget, mode, output, normalize and the raw-input parameters from the query string and the JSON fields (given
    in one place only)."""
    known = (*BUDGETS, "mode", "output", "normalize", *RAW)
    unknown = sorted((set(query) | set(fields)) - set(known))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; accepted: {', '.join(known)}")
    both = sorted(set(query) & set(fields))
    if both:
        raise ValueError(f"{both} given both in the query string and in the body; give each once")
    params: dict[str, Any] = {"mode": "attn+ffn", "output": "pooled", "normalize": False}
    for name, text in query.items():
        if name in (*BUDGETS, "add_offset"):
            try:
                params[name] = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {text!r}") from None
        elif name == "bands":
            params[name] = [band.strip() for band in text.split(",")]
        elif name == "normalize":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"normalize must be true or false, got {text!r}")
            params[name] = text.lower() in ("true", "1")
        else:
            params[name] = text
    params.update(fields)
    if isinstance(params.get("bands"), str):
        params["bands"] = [band.strip() for band in params["bands"].split(",")]
    if not isinstance(params["normalize"], bool):
        raise TypeError(f"normalize must be true or false, got {params['normalize']!r}")
    return params  # output and mode are the model's to check (engine.check_inputs), once


def _prepare(engine: Engine, x: torch.Tensor, params: dict[str, Any]
             ) -> tuple[torch.Tensor, Choice, Prepared | None]:
    """Prepare (raw input), cast and check one request's batch and resolve its budget (in a thread: NaN checks read
    every value)."""
    model, prepared = engine.model, None
    if any(name in params for name in RAW):
        if "bands" not in params:
            raise ValueError(f"raw input needs bands= naming the bands of x in order (e.g. bands=B04,B03,B02); "
                             f"{model.cfg.name} takes {', '.join(model.spec.bands)}")
        if params["normalize"]:
            raise ValueError("give normalize=true (x in model units) or bands=/units= (raw x), not both")
        prepared = model.prepare(x, bands=params["bands"], units=params.get("units"),
                                 add_offset=params.get("add_offset", 0.0))
        x = prepared.x
    else:
        x = x.to(device=model.device)
        if params["normalize"]:
            # in the model's precision, float32 at least: bf16 statistics would round the inputs twice, and a
            # float64 model must not see its inputs rounded to float32 first
            x = model.normalize(x.to(torch.promote_types(model.dtype, torch.float32)))
        x = x.to(dtype=model.dtype)
    engine.check_inputs(x, params["output"])
    budget = {name: params[name] for name in BUDGETS if name in params}
    choice = engine.choose(x.shape[0], mode=params["mode"], image_size=(x.shape[-2], x.shape[-1]), **budget)
    return x, choice, prepared


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0
                      ) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (``port=0``: a free port); yields its base URL.

    For notebooks, tests and the load benchmark; ``slimkern serve`` runs uvicorn in the foreground instead.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="slimkern-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within {timeout_s:g} s")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
