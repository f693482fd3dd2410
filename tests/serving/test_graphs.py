"""CUDA graphs: replay equals the eager forward, the cache is bounded, one copy of the weights (GPU only)."""

import pytest
import torch

from slimkern import Engine
from slimkern.serving.graphs import GraphCache
from tests.helpers import rel_error, tensor_storage_bytes, tiny_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def test_graph_cache_refuses_a_cpu_model():
    with pytest.raises(ValueError, match="CUDA graphs need a model on a CUDA device"):
        GraphCache(tiny_model())


def test_engine_runs_eagerly_on_cpu():
    assert Engine(tiny_model()).graphs is None


@pytest.fixture(scope="module")
def model():
    return tiny_model(device="cuda")


#: Every backend's forward is captured alike: the kernels are custom ops, allocating through PyTorch.
BACKENDS = {"torch": torch.float32, "triton": torch.float32, "cuda": torch.bfloat16}


@pytest.fixture(scope="module", params=list(BACKENDS))
def any_backend_model(request):
    from slimkern.backends import list_backends

    why = list_backends()[request.param] if torch.cuda.is_available() else "no CUDA GPU"
    if why:
        pytest.skip(f"{request.param}: {why}")
    return tiny_model(device="cuda", dtype=BACKENDS[request.param], backend=request.param)


@cuda
@pytest.mark.parametrize("batch", [1, 3])
def test_every_backend_replays_its_captured_graph(any_backend_model, batch):
    model = any_backend_model
    engine = Engine(model, buckets=(1, 4))
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(model.dtype)
    for width in (1.0, 0.1):
        choice = engine.choose(batch, width=width)
        first = engine.execute(x, choice)
        again = engine.execute(x, choice)
        padded = torch.cat([x, x.new_zeros(engine.graphs.bucket_for(batch) - batch, *x.shape[1:])])
        assert torch.equal(first, again) and torch.equal(first, model.run(padded, width)[:batch])
    assert engine.graphs.captures == 2


@cuda
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_replay_equals_the_eager_forward(model, batch):
    engine = Engine(model, buckets=(1, 4, 8))
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    for width in (1.0, 0.5, 0.1, 0.01):
        choice = engine.choose(batch, width=width)
        first = engine.execute(x, choice)
        again = engine.execute(x, choice)  # a replay of the graph captured by the first call
        bucket = engine.graphs.bucket_for(batch)
        padded = torch.cat([x, x.new_zeros(bucket - batch, *x.shape[1:])])
        assert torch.equal(first, again)
        assert torch.equal(first, model.run(padded, width)[:batch])  # same kernels as the eager padded batch
        assert rel_error(first, model.run(x, width)) < 1e-5  # other row counts may round the last bits differently
    assert engine.graphs.captures == len(engine.graphs) == 4


@cuda
def test_graph_cache_is_a_bounded_lru(model):
    engine = Engine(model, buckets=(2,), graph_max_entries=2)
    x = torch.randn(2, 3, 224, 224, device="cuda")
    for width in (1.0, 0.5, 0.1, 1.0):
        engine.run(x, width=width)
    assert len(engine.graphs) == 2 and engine.graphs.captures == 4  # 1.0 was evicted by 0.1, captured again
    byte_bound = Engine(model, buckets=(2,), graph_max_bytes=1)
    for width in (1.0, 0.5):
        byte_bound.run(x, width=width)
    assert len(byte_bound.graphs) == 1  # the newest graph always stays


@cuda
def test_one_weight_copy_on_the_gpu(model):
    """Allocator statistics: serving many widths eagerly leaves no allocation behind; graphs add their buffers
    and pools but never move or copy a parameter."""
    params = {name: p.data_ptr() for name, p in model.named_parameters()}
    storage = tensor_storage_bytes(model)
    x = torch.randn(2, 3, 224, 224, device="cuda")
    eager = Engine(model, graphs=False)
    eager.run(x, width=1.0)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for width in (1.0, 0.5, 0.25, 0.1, 0.01):
        eager.run(x, width=width)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    graphs = Engine(model)
    for width in (1.0, 0.5, 0.25, 0.1, 0.01):
        graphs.run(x, width=width)
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == params
    assert tensor_storage_bytes(model) == storage
