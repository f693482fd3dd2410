import pytest
import torch

from slimkern.backends import describe_backends, list_backends, select_backend
from tests.helpers import tiny_model


def test_auto_picks_torch_on_cpu():
    assert select_backend("auto", torch.device("cpu"), torch.float32).name == "torch"


def test_refusal_lists_every_backend_with_reasons():
    with pytest.raises(NotImplementedError) as err:
        select_backend("auto", torch.device("cpu"), torch.int32)
    message = str(err.value)
    assert "torch: dtype torch.int32 is not supported" in message
    assert "cuda:" in message and "triton:" in message


def test_forced_backend_is_checked():
    with pytest.raises(NotImplementedError, match="requested 'torch'"):
        select_backend("torch", torch.device("meta"), torch.float32)


def test_list_backends_reports_torch_available():
    status = list_backends()
    assert status["torch"] is None and set(status) == {"cuda", "triton", "torch"}


def test_model_reports_its_backend():
    model = tiny_model(backend="torch")
    assert model.backend.name == "torch" and "backend=torch" in repr(model)


def test_a_backend_reports_the_ops_it_hands_to_another_backend():
    """The cuda backend runs float32 models on the torch backend's ops: it says so per op, never claims them."""
    from slimkern.backends.base import OPS
    from slimkern.backends.cuda import CudaBackend

    cuda = CudaBackend()
    assert cuda.fallbacks(torch.float32) == dict.fromkeys(OPS, "torch")
    assert cuda.fallbacks(torch.bfloat16) == {} and cuda.fallbacks(torch.float16) == {}
    assert select_backend("torch", torch.device("cpu"), torch.float32).fallbacks(torch.float32) == {}
    line = describe_backends()["cuda"]
    assert "float32: layer_norm, sliced_linear, attention run as the torch backend's ops" in line
    assert "bfloat16:" not in line and describe_backends()["torch"] == "available"


def test_each_backend_lives_in_its_own_package_with_its_tolerances():
    from slimkern.backends.registry import _BACKENDS, PRIORITY

    for name in PRIORITY:
        backend = _BACKENDS[name]
        assert type(backend).__module__ == f"slimkern.backends.{name}.backend"
        assert set(backend.tolerances) >= set(backend.dtypes)
