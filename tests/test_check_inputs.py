"""Validate once: every entry point runs ``SlimModel.check_inputs`` exactly once per call (counted by its NaN scans,
the one check that reads every value), and the backend is resolved when the model is loaded or moved, not per call.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

import slimkern.model
from slimkern import Engine, checks
from tests.helpers import tiny_model

SMALL = {"img_size": 32}  # 4 patches + class token: the checks, not the model, are under test


@pytest.fixture(scope="module")
def model():
    return tiny_model(**SMALL)


@pytest.fixture
def scans(monkeypatch) -> list[tuple]:
    """Every NaN/Inf scan of an input: (shape,) per call of the finiteness check."""
    calls = []
    finite = checks.check_finite

    def counted(name, x):
        calls.append(tuple(x.shape))
        finite(name, x)

    monkeypatch.setattr(checks, "check_finite", counted)
    return calls


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32)


@pytest.mark.parametrize("call", ["run", "reference", "validate", "run_widths", "engine.run", "engine.execute",
                                  "check_inputs"])
def test_each_entry_point_scans_the_input_once(model, scans, call):
    x = _x()
    engine = Engine(model, widths=(1.0, 0.5))
    {
        "run": lambda: model.run(x, 0.5),
        "reference": lambda: model.reference(x, 0.5),
        "validate": lambda: model.validate(x, 0.5),
        "run_widths": lambda: model.run_widths(x, [1.0, 0.5, 0.1]),
        "engine.run": lambda: engine.run(x, flops=0.7),
        "engine.execute": lambda: engine.execute(x, engine.choose(2, width=0.5)),
        "check_inputs": lambda: model.check_inputs(x, 0.5),
    }[call]()
    assert scans == [(2, 3, 32, 32)]


def test_the_server_scans_each_request_once_and_not_the_merged_batch(model, scans):
    """Two requests of one plan are merged into one model call: two scans (one per request), none of the batch."""
    pytest.importorskip("fastapi")
    from slimkern.serving.server import EmbedService

    service = EmbedService(Engine(model, widths=(1.0, 0.5)), max_batch=4, max_wait_ms=200)

    async def two_requests():
        params = {"width": 0.5}
        return await asyncio.gather(service.embed_tensor(_x(1), params), service.embed_tensor(_x(2), params))

    try:
        (out1, _), (out2, _) = asyncio.run(two_requests())
    finally:
        service.shutdown()
    assert out1.shape == (1, model.dim) and out2.shape == (2, model.dim)
    assert sorted(scans) == [(1, 3, 32, 32), (2, 3, 32, 32)]


def test_check_inputs_returns_the_checked_widths(model):
    x = _x()
    assert model.check_inputs(x, 1) == 1.0 and isinstance(model.check_inputs(x, 1), float)
    assert model.check_inputs(x, (1, 0.5)) == [1.0, 0.5]
    assert model.check_inputs(x) is None  # a serving budget picks the width later
    with pytest.raises(ValueError, match="width must be in"):
        model.check_inputs(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.check_inputs(torch.full((1, 3, 32, 32), float("nan")))


@pytest.fixture
def resolutions(monkeypatch) -> list[tuple]:
    calls = []
    select = slimkern.model.select_backend

    def counted(name, device, dtype):
        calls.append((name, device.type, dtype))
        return select(name, device, dtype)

    monkeypatch.setattr(slimkern.model, "select_backend", counted)
    return calls


def test_backend_is_resolved_on_load_and_move_not_per_call(resolutions):
    model = tiny_model(**SMALL)
    assert resolutions[-1] == ("auto", "cpu", torch.float32)  # at load
    resolutions.clear()
    for _ in range(3):
        model.run(_x(), 0.5)
    assert resolutions == []
    model.double()
    assert resolutions == [("auto", "cpu", torch.float64)] and model.backend.name == "torch"
    model.run(_x().double(), 0.5)
    model.backend_name = "torch"
    assert resolutions == [("auto", "cpu", torch.float64), ("torch", "cpu", torch.float64)]
    model.to(torch.float32)
    model.run(_x(), 0.5)
    assert len(resolutions) == 3


def test_a_move_no_backend_supports_fails_at_the_next_call_with_the_reasons():
    model = tiny_model(backend="triton", **SMALL)  # the Triton interpreter on a CPU (tests/conftest.py)
    model.double()  # nn.Module moves never raise: the call does, with the reason
    with pytest.raises(NotImplementedError, match="triton: dtype torch.float64 is not supported"):
        model.run(_x().double())
    model.float()
    assert model.backend.name == "triton"
    with pytest.raises(NotImplementedError, match="no backend can run"):
        model.backend_name = "cuda"  # resolved at once: an impossible request says so where it is made
