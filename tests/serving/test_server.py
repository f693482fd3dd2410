"""The HTTP API: every encoding, budgets, concurrent clients on loopback, bad input, a full queue, metrics."""

import asyncio
import io
import json
import re
import tempfile
import threading

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from slimkern import Engine
from tests.helpers import rel_error, tensor_storage_bytes, tiny_model

pytest.importorskip("fastapi", reason="the HTTP server needs the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="the HTTP tests need the 'serve' extra")
from slimkern.serving.server import background_server, create_app  # noqa: E402

NPY, ST, JS = "application/x-npy", "application/x-safetensors", "application/json"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model, widths=(1.0, 0.5, 0.25, 0.1, 0.01))


@pytest.fixture()
def app(engine):
    app = create_app(engine, max_batch=8, max_wait_ms=5, max_queue=32, max_body_bytes=4 << 20)
    yield app
    app.state.batcher.shutdown()


def npy(x) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(x))
    return buffer.getvalue()


def from_npy(content: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(content)))


def post(app, content: bytes, content_type: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/embed", content=content, headers={"content-type": content_type,
                                                                            **(headers or {})}, **kwargs)

    return asyncio.run(go())


def get(app, path: str) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_models_and_healthz(app, model):
    assert get(app, "/healthz").json()["status"] == "ok"
    info = get(app, "/v1/models").json()["data"][0]
    assert info["id"] == model.cfg.name and info["embedding_dim"] == model.dim
    assert info["input"]["bands"] == list(model.cfg.bands) and info["input"]["mean"] == list(model.cfg.mean)
    assert [w["width"] for w in info["widths"]] == [0.01, 0.1, 0.25, 0.5, 1.0]


def test_npy_in_npy_out_equals_run(app, model):
    x = torch.randn(3, 3, 224, 224)
    r = post(app, npy(x.numpy()), NPY, params={"width": 0.25})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == NPY and float(r.headers["x-slimkern-width"]) == 0.25
    assert float(r.headers["x-slimkern-relative-flops"]) == pytest.approx(model.relative_flops(0.25))
    assert torch.equal(from_npy(r.content), model.run(x, 0.25))  # alone in its batch: the same computation


def test_safetensors_in_and_out(app, model):
    x = torch.randn(2, 3, 224, 224)
    r = post(app, st_save({"x": x}), ST, params={"flops": 0.6})
    assert r.status_code == 200, r.text
    width = float(r.headers["x-slimkern-width"])
    assert width == 0.5 and model.relative_flops(0.5) <= 0.6 < model.relative_flops(1.0)
    assert torch.equal(st_load(r.content)["embeddings"], model.run(x, width))


def test_json_in_and_out_with_tokens(app, model):
    x = torch.randn(1, 3, 224, 224)
    r = post(app, json.dumps({"x": x.tolist(), "width": 0.1, "output": "tokens"}).encode(), JS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 0.1 and body["shape"] == [1, 197, model.dim]
    assert rel_error(torch.tensor(body["embeddings"]), model.run(x, 0.1, output="tokens")) < 1e-6  # JSON decimals


def test_accept_header_chooses_the_response_encoding(app, model):
    x = torch.randn(1, 3, 224, 224)
    r = post(app, npy(x.numpy()), NPY, params={"width": 1.0}, headers={"accept": JS})
    assert r.status_code == 200 and r.headers["content-type"] == JS
    assert r.json()["shape"] == [1, model.dim]


@pytest.mark.parametrize("dtype", [">f4", np.float16, np.float64])
def test_npy_float_dtypes_and_byte_orders_are_cast(app, model, dtype):
    x = np.random.randn(2, 3, 224, 224).astype(dtype)
    r = post(app, npy(x), NPY, params={"width": 0.5})
    assert r.status_code == 200, r.text
    expected = model.run(torch.from_numpy(x.astype(np.float64)).float(), 0.5)
    assert rel_error(from_npy(r.content), expected) < 1e-5


def test_normalize_flag_takes_raw_values(app, model):
    raw = torch.rand(2, 3, 224, 224)  # RGB / 255: the model units of model.spec
    r = post(app, npy(raw.numpy()), NPY, params={"width": 0.5, "normalize": "true"})
    assert r.status_code == 200, r.text
    assert torch.equal(from_npy(r.content), model.run(model.normalize(raw), 0.5))


def test_raw_input_with_band_names_goes_through_prepare(app, model):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 224, 224)).astype(np.float32)  # 8-bit, as B, G, R
    r = post(app, npy(pixels[:, ::-1].copy()), NPY, params={"width": 0.5, "bands": "B02,B03,B04", "units": "DN"})
    assert r.status_code == 200, r.text
    want = model.run(model.prepare(pixels, bands=["R", "G", "B"], units="DN").x, 0.5)
    assert torch.equal(from_npy(r.content), want)
    provenance = json.loads(r.headers["x-slimkern-provenance"])
    assert provenance["input"]["bands"] == ["R", "G", "B"] and provenance["input"]["given"] == ["B04", "B03", "B02"]
    assert provenance["input"]["units"] == "DN" and provenance["width"] == 0.5 and provenance["model"] == model.cfg.name
    body = json.dumps({"x": pixels[:1].tolist(), "width": 0.5, "bands": ["R", "G", "B"], "units": "DN"}).encode()
    assert torch.allclose(torch.tensor(post(app, body, JS).json()["embeddings"]), want[:1], atol=1e-5)
    st = post(app, st_save({"x": torch.from_numpy(pixels)}), ST, params={"width": 0.5, "bands": "R,G,B"})
    assert json.loads(st_load_metadata(st.content)["provenance"])["input"]["units"] == "DN"


def st_load_metadata(content: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(content)
        f.flush()
        with safe_open(f.name, "pt") as st:
            return st.metadata()


@pytest.mark.parametrize("params, match", [
    ({"width": 0.5}, "every value is an integer in 0..255: 8-bit pixel values"),  # raw pixels sent as normalised
    ({"width": 0.5, "units": "DN"}, "raw input needs bands= naming the bands of x in order"),
    ({"width": 0.5, "bands": "B04,B03"}, "2 band names .* for 3 bands of raw"),
    ({"width": 0.5, "bands": "R,G,NIR"}, r"missing B\). Given: R, G, NIR \(not recognised: NIR\)"),
    ({"width": 0.5, "bands": "R,G,B", "normalize": "true"}, "give normalize=true .* or bands=/units= .*, not both"),
])
def test_raw_or_mislabelled_input_gets_422_with_the_models_message(app, params, match):
    pixels = np.random.default_rng(1).integers(0, 256, (1, 3, 224, 224)).astype(np.float32)
    r = post(app, npy(pixels), NPY, params=params)
    assert r.status_code == 422, r.text
    assert re.search(match, r.json()["detail"]), r.json()["detail"]


def test_every_answer_carries_its_provenance(app, model):
    r = post(app, npy(np.random.randn(1, 3, 224, 224).astype(np.float32)), NPY, params={"flops": 0.6},
             headers={"accept": JS})
    provenance = r.json()["provenance"]
    assert provenance["checkpoint"] == {"name": "random weights", "sha256": None}
    assert provenance["mode"] == "attn+ffn" and provenance["width"] == r.json()["width"]
    assert provenance["input"]["prepared"] is False and provenance["input"]["bands"] == ["R", "G", "B"]
    assert provenance["dtype"] == "float32" and provenance["backend"] == "torch"
    assert provenance["versions"]["torch"] and provenance["versions"]["slimkern"]


def test_server_check_mode_warn_lets_raw_looking_input_through(model):
    app = create_app(Engine(model, widths=(1.0, 0.5), check="warn"))
    try:
        pixels = np.random.default_rng(1).integers(0, 256, (1, 3, 224, 224)).astype(np.float32)
        with pytest.warns(UserWarning, match="8-bit pixel values"):
            r = post(app, npy(pixels), NPY, params={"width": 0.5})
    finally:
        app.state.batcher.shutdown()
    assert r.status_code == 200, r.text


def test_normalize_flag_keeps_a_float64_model_in_float64():
    model = tiny_model(dtype=torch.float64)
    app = create_app(Engine(model, widths=(1.0, 0.5)))
    try:
        raw = torch.rand(1, 3, 224, 224, dtype=torch.float64)
        r = post(app, npy(raw.numpy()), NPY, params={"width": 0.5, "normalize": "true"})
    finally:
        app.state.batcher.shutdown()
    assert r.status_code == 200, r.text
    # answers are float32: equal to the float64 run rounded once, not to a run on inputs rounded to float32
    assert torch.equal(from_npy(r.content), model.run(model.normalize(raw), 0.5).float())


def test_concurrent_clients_on_loopback_with_mixed_widths(engine, model):
    """8 clients, 4 requests each, mixed budgets; every response against a direct run of the same input.

    Requests of one plan are merged, so a row may be computed in a batch of another size than the direct run:
    the torch CPU GEMMs then may round differently in the last bits, hence a tolerance of a few float32 ulps
    instead of equality."""
    budgets = [{"width": 1.0}, {"width": 0.5}, {"width": 0.1}, {"flops": 0.3}, {"width": 0.01}, {"width": 0.25}]
    app = create_app(engine, max_batch=8, max_wait_ms=20, max_queue=64)
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1 + i % 2, 3, 224, 224, generator=generator) for i in range(32)]

    async def client(url: str, ids: list[int], results: dict) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for i in ids:
                r = await http.post("/v1/embed", content=npy(inputs[i].numpy()), params=budgets[i % len(budgets)],
                                    headers={"content-type": NPY})
                results[i] = r

    async def all_clients(url: str) -> dict:
        results: dict = {}
        await asyncio.gather(*(client(url, list(range(c, 32, 8)), results) for c in range(8)))
        return results

    try:
        with background_server(app) as url:
            results = asyncio.run(all_clients(url))
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        app.state.batcher.shutdown()
    for i, r in results.items():
        assert r.status_code == 200, r.text
        width = float(r.headers["x-slimkern-width"])
        expected = engine.choose(inputs[i].shape[0], **budgets[i % len(budgets)]).width
        assert width == expected
        assert rel_error(from_npy(r.content), model.run(inputs[i], width)) < 1e-5, (i, width)
    assert 'slimkern_requests_total{status="200"} 32.0' in metrics
    assert "slimkern_batch_size_bucket" in metrics and 'slimkern_request_latency_seconds_count{width="0.5"}' in metrics
    assert "slimkern_queue_depth 0.0" in metrics


def nan_input() -> np.ndarray:
    x = np.random.randn(1, 3, 224, 224).astype(np.float32)
    x[0, 1, 5, 5] = np.nan
    return x


GOOD = np.random.randn(1, 3, 224, 224).astype(np.float32)
BAD_REQUESTS = [  # (id, body, content type, query, status, words in the message)
    ("garbage npy", b"not an array", NPY, {}, 400, "not a .npy array"),
    ("integer npy", npy(np.zeros((1, 3, 224, 224), np.int64)), NPY, {}, 400, "floating-point"),
    ("long double npy", npy(np.zeros((1, 3, 224, 224), np.longdouble)), NPY, {}, 400, "float32, or float16/float64"),
    ("garbage safetensors", b"\x00" * 16, ST, {}, 400, "not a safetensors file"),
    ("safetensors without x", st_save({"y": torch.zeros(1)}), ST, {}, 400, "named 'x'"),
    ("invalid json", b"{not json", JS, {}, 400, "not valid JSON"),
    ("json without x", b'{"width": 0.5}', JS, {}, 400, '"x"'),
    ("deeply nested json", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JS, {}, 400, "nests JSON too deeply"),
    ("json integer of 5000 digits", b'{"x": [' + b"1" * 5000 + b"]}", JS, {}, 400, "not valid JSON"),
    ("ragged json", json.dumps({"x": [[1.0, 2.0], [3.0]]}).encode(), JS, {}, 400, "rectangular"),
    ("unsupported type", b"abc", "text/plain", {}, 415, "unsupported Content-Type"),
    ("wrong band count", npy(np.zeros((1, 4, 224, 224), np.float32)), NPY, {}, 422, "4 bands"),
    ("image size", npy(np.zeros((1, 3, 100, 100), np.float32)), NPY, {}, 422, "not a positive multiple"),
    ("2-d array", npy(np.zeros((3, 224), np.float32)), NPY, {}, 422, "[B, C, H, W]"),
    ("empty batch", npy(np.zeros((0, 3, 224, 224), np.float32)), NPY, {}, 422, "empty batch"),
    ("NaN", npy(nan_input()), NPY, {}, 422, "NaN"),
    ("width 0", npy(GOOD), NPY, {"width": 0}, 422, "width must be in (0, 1]"),
    ("width 2", npy(GOOD), NPY, {"width": 2}, 422, "width must be in (0, 1]"),
    ("width nan", npy(GOOD), NPY, {"width": "nan"}, 422, "width must be in (0, 1]"),
    ("width text", npy(GOOD), NPY, {"width": "abc"}, 422, "width must be a number"),
    ("flops below the floor", npy(GOOD), NPY, {"flops": 0.01}, 422, "below the smallest candidate"),
    ("flops above 1", npy(GOOD), NPY, {"flops": 3}, 422, "in (0, 1]"),
    ("two budgets", npy(GOOD), NPY, {"width": 0.5, "flops": 0.5}, 422, "give one budget"),
    ("latency without profile", npy(GOOD), NPY, {"latency_ms": 10}, 422, "need a latency profile"),
    ("unknown parameter", npy(GOOD), NPY, {"widht": 0.5}, 422, "unknown parameters ['widht']"),
    ("unknown mode", npy(GOOD), NPY, {"mode": "heads"}, 422, "unknown mode"),
    ("unknown output", npy(GOOD), NPY, {"output": "cls"}, 422, "unknown output"),
    ("json image size", json.dumps({"x": GOOD[:, :, :20, :20].tolist()}).encode(), JS, {}, 422,
     "not a positive multiple"),
    ("json width string", json.dumps({"x": GOOD[:, :, :16, :16].tolist(), "width": "half"}).encode(), JS, {}, 422,
     "width must be a number"),
    ("json normalize string", json.dumps({"x": GOOD[:, :, :16, :16].tolist(), "normalize": "yes"}).encode(), JS,
     {}, 422, "normalize must be true or false"),
    ("too large", b"\x00" * (5 << 20), NPY, {}, 413, "over the limit"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(app, case):
    _, body, content_type, query, status, words = case
    r = post(app, body, content_type, params=query)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert post(app, npy(GOOD), NPY, params={"width": 0.5}).status_code == 200


def test_latency_metric_labels_stay_bounded(app):
    """Width labels are the engine's candidates; arbitrary client widths share one label instead of each adding
    a time series."""
    for width in (0.5, 0.123456, 0.123457, 0.98765):
        assert post(app, npy(GOOD), NPY, params={"width": width}).status_code == 200
    metrics = get(app, "/metrics").text
    assert 'slimkern_request_latency_seconds_count{width="0.5"} 1.0' in metrics
    assert 'slimkern_request_latency_seconds_count{width="other"} 3.0' in metrics
    assert "0.123456" not in metrics and "0.98765" not in metrics


def test_unacceptable_accept_header(app):
    r = post(app, npy(GOOD), NPY, headers={"accept": "image/png"})
    assert r.status_code == 406 and "cannot answer" in r.json()["detail"]


def test_full_queue_answers_503_with_retry_after(engine):
    """max_queue=1 and a model call held until the second request has been refused."""
    app = create_app(engine, max_queue=1, max_wait_ms=0, retry_after_s=2)
    release, started = threading.Event(), threading.Event()
    run_batch = app.state.batcher.run_batch

    def held(items, x):
        started.set()
        release.wait(30)
        return run_batch(items, x)

    app.state.batcher.run_batch = held

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            def send():
                return client.post("/v1/embed", content=npy(GOOD), headers={"content-type": NPY})

            first = asyncio.create_task(send())
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = await send()
            release.set()
            return await first, second

    try:
        first, second = asyncio.run(go())
    finally:
        release.set()
        app.state.batcher.shutdown()
    assert second.status_code == 503 and second.headers["retry-after"] == "2"
    assert "max_queue=1" in second.json()["detail"]
    assert first.status_code == 200


def test_requests_still_uploading_count_against_max_queue(engine):
    """max_queue=1 and a first request whose body is still arriving: the second gets 503 at once, before its body
    is read and decoded (counting only batcher-queued requests let any number of bodies pile up in memory)."""
    app = create_app(engine, max_queue=1, max_wait_ms=0, retry_after_s=3)
    body, started, release = npy(GOOD), asyncio.Event(), asyncio.Event()

    async def slow_body():
        yield body[:100]
        started.set()
        await release.wait()
        yield body[100:]

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/embed", content=slow_body(), headers={"content-type": NPY}))
            await asyncio.wait_for(started.wait(), 10)
            second = await client.post("/v1/embed", content=npy(GOOD), headers={"content-type": NPY})
            release.set()
            return await first, second

    try:
        first, second = asyncio.run(go())
    finally:
        app.state.batcher.shutdown()
    assert second.status_code == 503 and second.headers["retry-after"] == "3", second.text
    assert "max_queue=1" in second.json()["detail"]
    assert first.status_code == 200, first.text


def test_latency_budget_over_http(engine, model):
    engine.profile(batch_sizes=(1, 2), widths=(1.0, 0.1), repeats=1)
    app = create_app(engine)
    try:
        fast = engine.latency_profile.ms(1, 0.1)
        r = post(app, npy(GOOD), NPY, params={"latency_ms": 1e6})
        assert r.status_code == 200 and float(r.headers["x-slimkern-width"]) == 1.0
        r = post(app, npy(GOOD), NPY, params={"latency_ms": fast / 2})
        assert r.status_code == 422 and "cannot be met" in r.json()["detail"]
    finally:
        engine.latency_profile = None
        app.state.batcher.shutdown()


def test_serving_keeps_one_weight_copy(app, model):
    before = tensor_storage_bytes(model)
    for width in (1.0, 0.5, 0.25, 0.1, 0.01):
        assert post(app, npy(GOOD), NPY, params={"width": width}).status_code == 200
    assert tensor_storage_bytes(model) == before == sum(p.untyped_storage().nbytes() for p in model.parameters())
