"""The HTTP server against hostile clients (issue 13 items 1, 2, 3, 5), on loopback with bounded counts and times:
images over the token limit, npy/safetensors headers that declare more than the body holds, slow and idle uploads,
and inputs whose embedding overflows, each refused without holding memory, workers or other clients' answers."""

import asyncio
import io
import json
import socket
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from slimkern import Engine
from tests.helpers import tiny_model

pytest.importorskip("fastapi", reason="the HTTP server needs the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="the HTTP tests need the 'serve' extra")
from slimkern.serving.codecs import PayloadError, decode  # noqa: E402
from slimkern.serving.server import background_server, create_app  # noqa: E402

NPY, ST = "application/x-npy", "application/x-safetensors"


@pytest.fixture(scope="module")
def engine():
    return Engine(tiny_model(), widths=(1.0, 0.5))


def npy(x) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(x))
    return buffer.getvalue()


def npy_header(shape, dtype="<f4") -> bytes:
    """Just the header of a .npy file declaring ``shape``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def safetensors_header(shape, dtype="F32", end=None) -> bytes:
    count = int(np.prod(shape))
    header = json.dumps({"x": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, end or 4 * count]}}).encode()
    return struct.pack("<Q", len(header)) + header


def post(app, content: bytes, content_type: str, **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/embed", content=content, headers={"content-type": content_type}, **kwargs)

    return asyncio.run(go())


def peak_bytes(fn) -> int:
    """Peak Python/numpy heap growth while ``fn`` runs (numpy reports its array buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- item 1: images over the token limit get 422 naming it ---------------------------------------------------------
def test_an_image_over_the_token_limit_gets_422_naming_the_limit():
    app = create_app(Engine(tiny_model(max_tokens=100), widths=(1.0,)))
    try:
        r = post(app, npy(np.zeros((1, 3, 224, 224), np.float32)), NPY)
        assert r.status_code == 422 and "197 tokens, over this model's limit of 100 tokens" in r.json()["detail"]
        r = post(app, safetensors_header((1, 3, 224, 224)) + bytes(4 * 3 * 224 * 224), ST)
        assert r.status_code == 422 and "limit of 100 tokens" in r.json()["detail"]
        assert post(app, npy(np.random.randn(1, 3, 144, 144).astype(np.float32)), NPY).status_code == 200  # 82 tokens
        assert asyncio.run(_get_json(app, "/v1/models"))["data"][0]["limits"]["max_tokens"] == 100
    finally:
        app.state.batcher.shutdown()


async def _get_json(app, path):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return (await client.get(path)).json()


# -- item 2: declared shapes are checked against the body before anything is allocated ----------------------------
@pytest.mark.parametrize("shape", [(100000, 3, 224, 224), (1000, 3, 224, 224)])
def test_an_npy_header_declaring_more_than_the_body_holds_allocates_nothing(shape):
    body = npy_header(shape) + bytes(64)
    with pytest.raises(PayloadError, match=rf"declares {shape[0]}x3x224x224 float32 \(\d+ bytes\) but the body "
                                           r"holds 64 bytes after the header"):
        decode(body, NPY)
    assert peak_bytes(lambda: pytest.raises(PayloadError, decode, body, NPY)) < 1 << 20


def test_a_safetensors_header_declaring_more_than_the_body_holds_allocates_nothing():
    body = safetensors_header((100000, 3, 224, 224)) + bytes(64)
    with pytest.raises(PayloadError, match=r"declares .* bytes\) but the body holds 64 bytes"):
        decode(body, ST)
    huge = struct.pack("<Q", 1 << 40) + b"{}"  # a header length of a terabyte
    with pytest.raises(PayloadError, match="header length"):
        decode(huge, ST)
    assert peak_bytes(lambda: pytest.raises(PayloadError, decode, body, ST)) < 1 << 20


def test_well_formed_bodies_still_decode():
    x = np.random.randn(2, 3, 16, 16).astype(np.float32)
    for arr in (x, np.asfortranarray(x), x.astype(">f8"), x.astype(np.float16)):
        got, _ = decode(npy(arr), NPY)
        assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))))
        got.add_(1)  # writable, and not the request's bytes
    got, _ = decode(st_save({"x": torch.from_numpy(x), "y": torch.zeros(2)}), ST)
    assert torch.equal(got, torch.from_numpy(x))


def test_hostile_headers_over_http_get_400_and_the_server_keeps_serving(engine):
    app = create_app(engine)
    try:
        for body, kind in ((npy_header((100000, 3, 224, 224)) + bytes(64), NPY),
                           (safetensors_header((100000, 3, 224, 224)) + bytes(64), ST)):
            r = post(app, body, kind)
            assert r.status_code == 400 and "declares" in r.json()["detail"], r.text
        assert post(app, npy(np.random.randn(1, 3, 224, 224).astype(np.float32)), NPY).status_code == 200
    finally:
        app.state.batcher.shutdown()


# -- item 3: slow and idle uploads cannot hold the server -----------------------------------------------------------
def stalled_upload(url: str, source: str) -> socket.socket:
    """A connection from ``source`` that sends its headers and 100 of a declared 12,000 body bytes, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                 b"Content-Length: 12000\r\n\r\n" + b"\x00" * 100)
    return sock


def answer(sock: socket.socket, timeout: float) -> str | None:
    """The response on ``sock`` within ``timeout`` s (None: none yet)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode(errors="replace") or None
    except TimeoutError:
        return None


def status_of(sock: socket.socket, timeout: float) -> int | None:
    text = answer(sock, timeout)
    return None if text is None else int(text.split()[1])


def good_request(url: str, source: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as client:
        return client.post(f"{url}/v1/embed", content=npy(np.random.randn(1, 3, 224, 224).astype(np.float32)),
                           headers={"content-type": NPY})


def wait_for_in_flight(app, count: int) -> None:
    deadline = time.monotonic() + 10
    while app.state.service.in_flight != count:
        assert time.monotonic() < deadline, f"{app.state.service.in_flight} requests in flight, expected {count}"
        time.sleep(0.02)


def test_slow_clients_from_one_address_are_capped(engine):
    app = create_app(engine, max_queue=8, max_per_client=4, body_timeout_s=30)
    with background_server(app) as url:
        stalled = [stalled_upload(url, "127.0.0.1") for _ in range(10)]
        statuses = [status_of(s, 0.5) for s in stalled]
        wait_for_in_flight(app, 4)
        assert sorted(statuses, key=str) == [429] * 6 + [None] * 4, statuses  # beyond max_per_client: refused
        r = good_request(url, "127.0.0.2")  # another client: served although 10 of its neighbour's uploads stall
        assert r.status_code == 200, r.text
        for s in stalled:
            s.close()
        wait_for_in_flight(app, 0)  # a client that goes away frees its place
    app.state.batcher.shutdown()


def test_stalled_uploads_from_many_addresses_free_the_queue_at_the_deadline(engine):
    app = create_app(engine, max_queue=8, max_per_client=4, body_timeout_s=2)
    with background_server(app) as url:
        stalled = [stalled_upload(url, f"127.0.0.{10 + i}") for i in range(8)]  # one per address: max_queue full
        wait_for_in_flight(app, 8)
        first = good_request(url, "127.0.0.2")
        assert first.status_code == 503 and "max_queue=8" in first.json()["detail"]
        answers = [answer(s, 10) or "" for s in stalled]
        assert all(a.startswith("HTTP/1.1 408") and "within 2 s" in a for a in answers), answers
        assert good_request(url, "127.0.0.2").status_code == 200
        for s in stalled:
            s.close()
    app.state.batcher.shutdown()


# -- item 5: an overflowing input is refused; requests merged into its batch are still answered --------------------
def test_an_overflowing_input_gets_422_and_its_batch_mates_their_embeddings(engine):
    app = create_app(engine, max_batch=8, max_wait_ms=500)
    good = np.random.randn(1, 3, 224, 224).astype(np.float32)
    huge = np.random.randn(1, 3, 224, 224).astype(np.float32)
    huge[..., :16, :16] = 1e38  # one overflowing patch (band medians stay plausible)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            def send(x):
                return client.post("/v1/embed", content=npy(x), headers={"content-type": NPY}, params={"width": 0.5})

            answers = await asyncio.gather(send(good), send(huge))
            return answers, (await client.get("/metrics")).text

    try:
        (ok, bad), metrics = asyncio.run(go())
    finally:
        app.state.batcher.shutdown()
    assert "slimkern_batch_size_sum 2.0" in metrics and "slimkern_batch_size_count 1.0" in metrics  # one merged batch
    assert bad.status_code == 422 and "not finite" in bad.json()["detail"], bad.text
    assert ok.status_code == 200, ok.text
    expected = engine.model.run(torch.from_numpy(good), 0.5)
    assert torch.allclose(torch.from_numpy(np.load(io.BytesIO(ok.content))), expected, atol=1e-5)
