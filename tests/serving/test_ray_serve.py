"""Scale-out: a local Ray instance on this CPU machine, two replicas, mixed budgets through handles and HTTP."""

import io
import os
import socket

import numpy as np
import pytest
import torch

from tests.helpers import TINY, rel_error, tiny_model

pytest.importorskip("fastapi", reason="the replicas serve through the 'serve' extra")
httpx = pytest.importorskip("httpx", reason="the HTTP test needs the 'serve' extra")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

WIDTHS = (1.0, 0.5, 0.25, 0.1, 0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def handle():
    from slimkern.serving.ray_serve import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # two replicas share two cores
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app("satmae", num_replicas=2, ray_actor_options={"num_cpus": 0.5}, widths=WIDTHS, arch=TINY,
                        service={"max_batch": 4, "max_wait_ms": 5})
        yield serve.run(app, name="slimkern", route_prefix="/embed"), f"http://127.0.0.1:{port}/embed"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_serve_mixed_budgets(handle):
    handle, url = handle
    model = tiny_model()  # the same deterministic random weights the replicas load
    budgets = [{"width": 1.0}, {"flops": 0.6}, {"width": 0.1}, {"width": 0.01}, {"flops": 0.3}, {"width": 0.25}]
    generator = torch.Generator().manual_seed(2)
    inputs = [torch.randn(1 + i % 2, 3, 224, 224, generator=generator) for i in range(12)]
    calls = [handle.embed.remote(inputs[i].numpy(), **budgets[i % len(budgets)]) for i in range(12)]
    replicas = set()
    for i, call in enumerate(calls):
        result = call.result(timeout_s=120)
        replicas.add(result["replica"])
        # batches may merge requests of one plan: the last float32 bits may differ from a lone run
        assert rel_error(torch.from_numpy(np.array(result["embeddings"])), model.run(inputs[i], result["width"])) < 1e-5
        assert result["relative_flops"] == pytest.approx(model.relative_flops(result["width"]))
    assert len(replicas) == 2, "both replicas should have answered"
    big_endian = inputs[0].numpy().astype(">f4")  # a valid float array in the other byte order
    result = handle.embed.remote(big_endian, width=0.5).result(timeout_s=120)
    assert rel_error(torch.from_numpy(np.array(result["embeddings"])), model.run(inputs[0], 0.5)) < 1e-5
    assert os.getpid() not in replicas

    # HTTP through Ray's proxy: same body and answers as /v1/embed, 4xx for bad input
    buffer = io.BytesIO()
    np.save(buffer, inputs[0].numpy())
    r = httpx.post(url, content=buffer.getvalue(), params={"width": 0.5}, headers={"content-type": "application/x-npy"},
                   timeout=120)
    assert r.status_code == 200, r.text
    assert rel_error(torch.from_numpy(np.load(io.BytesIO(r.content))), model.run(inputs[0], 0.5)) < 1e-5
    r = httpx.post(url, content=buffer.getvalue(), params={"width": 3}, headers={"content-type": "application/x-npy"},
                   timeout=120)
    assert r.status_code == 422 and "width must be in (0, 1]" in r.json()["detail"]


def test_bad_input_through_a_handle_raises_the_model_error(handle):
    handle, _ = handle
    with pytest.raises(Exception, match="bands"):
        handle.embed.remote(np.zeros((1, 5, 224, 224), np.float32), width=0.5).result(timeout_s=60)
    with pytest.raises(Exception, match="x is int64; send normalised floating-point values"):
        handle.embed.remote(np.zeros((1, 3, 224, 224), np.int64), width=0.5).result(timeout_s=60)
