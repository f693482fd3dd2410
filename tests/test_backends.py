import pytest
import torch

from slimkern.backends import list_backends, select_backend
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
