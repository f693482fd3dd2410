"""What the zoo does so that torch.export can trace it, checked on its own (the export tests check the results)."""

import math

import pytest
import torch

from slimkern.zoo.copernicus_fm import fourier_frequencies
from slimkern.zoo.croma import alibi_2d
from slimkern.zoo.dofa import KernelCache
from tests.export.cases import tiny
from tests.helpers import rel_error


@pytest.mark.parametrize(("lower", "upper"), [(0.0001, 720.0), (0.001, 5.1e8), (1.0, 365.25), (100.0, 1e9)])
@pytest.mark.parametrize("count", [1, 2, 3, 48, 64, 384])
def test_fourier_frequencies_equal_the_logspace_they_replace(lower, upper, count):
    logspace = torch.logspace(math.log10(lower), math.log10(upper), count, base=10, dtype=torch.float64)
    assert torch.equal(torch.tensor(fourier_frequencies(lower, upper, count), dtype=torch.float64),
                       2 * math.pi / logspace)


def test_tracing_croma_leaves_no_fake_tensor_in_the_alibi_cache():
    model = tiny("croma_base")
    x = torch.randn(2, 12, 16, 16)

    class Bias(torch.nn.Module):
        def forward(self, x):
            return x.mean() + model.attention_bias(16, 16, x.dtype).sum()

    alibi_2d.cache_clear()
    torch.export.export(Bias(), (x,))
    bias = model.attention_bias(16, 16, torch.float32)
    assert type(bias) is torch.Tensor and torch.isfinite(bias).all()
    assert rel_error(model.run(x, 0.5), model.reference(x, 0.5)) < 1e-5


def test_a_frozen_kernel_cache_serves_its_entries_while_tracing():
    cache, params = KernelCache(), [torch.ones(2)]
    kept = (torch.full((2,), 7.0),)
    assert cache.get("key", params, lambda: kept) is kept

    class Lookup(torch.nn.Module):
        def forward(self, x):
            return x + cache.get("key", params, lambda: (torch.zeros(2),))[0]

    x = torch.zeros(2)
    assert torch.equal(torch.export.export(Lookup(), (x,)).module()(x), torch.zeros(2))  # not frozen: recomputed
    cache.freeze()
    assert torch.equal(torch.export.export(Lookup(), (x,)).module()(x), torch.full((2,), 7.0))


def test_value_checks_still_run_eagerly():
    with pytest.raises(ValueError, match="res must be finite and > 0"):
        tiny("scalemae_vitl").run(torch.randn(1, 3, 32, 32), 0.5, res=-1.0)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        tiny("prithvi_eo_v2_100_tl").run(torch.randn(1, 6, 32, 32), 0.5, temporal_coords=[[[float("nan"), 1.0]]],
                                         location_coords=[[0.0, 0.0]])
    with pytest.raises(ValueError, match="metadata latitude must lie in"):
        tiny("copernicus_fm_base").run(torch.randn(1, 12, 32, 32), 0.5,
                                       metadata=torch.tensor([[0.0, 95.0, 1.0, 1.0]]))
