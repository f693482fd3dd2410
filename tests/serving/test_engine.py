"""Budget routing: width, flops and latency budgets pick the right width; profiles carry a fingerprint."""

import json

import pytest
import torch

from slimkern import PAPER_WIDTHS, Engine
from slimkern.serving import LatencyProfile
from slimkern.serving.profile import fingerprint
from tests.helpers import tensor_storage_bytes, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def engine(model):
    return Engine(model)


def synthetic_profile(model, times: dict[int, dict[float, float]]) -> LatencyProfile:
    profile = LatencyProfile(fingerprint(model), "attn+ffn", "pooled", (224, 224))
    for batch, row in times.items():
        for width, ms in row.items():
            profile.record(batch, width, ms)
    return profile


def test_width_budget_is_the_width(engine, model):
    choice = engine.choose(2, width=0.1)
    assert choice.width == 0.1 and choice.plan is model.plan(0.1)
    assert choice.relative_flops == pytest.approx(model.relative_flops(0.1))
    assert engine.choose(1).width == 1.0  # no budget: the full model, as run()


@pytest.mark.parametrize("budget", [1.0, 0.6, 0.5, 0.3, 0.2])  # the tiny model's stem alone is ~17 %
def test_flops_budget_picks_the_largest_width_within_it(engine, model, budget):
    choice = engine.choose(1, flops=budget)
    assert choice.relative_flops <= budget
    larger = [w for w in PAPER_WIDTHS if w > choice.width]
    assert all(model.relative_flops(w) > budget for w in larger)


def test_flops_budget_with_user_widths(model):
    engine = Engine(model, widths=(1.0, 0.5, 0.1))
    assert engine.choose(1, flops=0.9).width == 0.5
    assert engine.choose(1, flops=model.relative_flops(0.5)).width == 0.5  # a budget equal to a width's compute fits


def test_flops_budget_below_the_smallest_width_says_so(engine, model):
    floor = model.relative_flops(PAPER_WIDTHS[0])
    with pytest.raises(ValueError, match="below the smallest candidate width 0.001"):
        engine.choose(1, flops=floor / 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0.5, flops=0.1), "give one budget"),
    (dict(flops=0.0), r"in \(0, 1\]"),
    (dict(flops=1.5), r"in \(0, 1\]"),
    (dict(flops=float("nan")), r"in \(0, 1\]"),
    (dict(width=2.0), r"width must be in \(0, 1\]"),
    (dict(latency_ms=-1.0), "positive number of milliseconds"),
    (dict(latency_ms=10.0), "need a latency profile"),
])
def test_bad_budgets_raise_clear_errors(engine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        engine.choose(1, **kwargs)


def test_latency_budget_with_a_synthetic_profile(engine, model):
    engine.latency_profile = synthetic_profile(model, {
        1: {1.0: 10.0, 0.5: 6.0, 0.1: 2.0},
        4: {1.0: 30.0, 0.5: 16.0, 0.1: 5.0},
    })
    assert engine.choose(1, latency_ms=12).width == 1.0
    assert engine.choose(1, latency_ms=9).width == 0.5
    assert engine.choose(1, latency_ms=2).width == 0.1
    # batch 3 rounds up to the profiled batch 4, never down to 1
    assert engine.choose(3, latency_ms=12).width == 0.1
    assert engine.choose(3, latency_ms=20).width == 0.5
    # batch 8: twice the largest profiled batch, latencies scaled linearly (0.5 -> 32 ms, 0.1 -> 10 ms)
    assert engine.choose(8, latency_ms=31).width == 0.1
    assert engine.choose(8, latency_ms=32).width == 0.5
    with pytest.raises(ValueError, match="cannot be met for a batch of 8: the fastest profiled width 0.1 takes 10 ms"):
        engine.choose(8, latency_ms=9)
    with pytest.raises(ValueError, match="measured for mode 'attn\\+ffn' at 224x224"):
        engine.choose(1, latency_ms=9, mode="ffn")


def test_run_routes_and_equals_model_run(engine, model):
    x = torch.randn(2, 3, 224, 224)
    out, choice = engine.run_with_choice(x, flops=0.3)
    assert torch.equal(out, model.run(x, choice.width))
    assert torch.equal(engine.run(x, width=0.1), model.run(x, 0.1))


def test_run_keeps_the_model_input_checks(engine):
    with pytest.raises(ValueError, match="bands"):
        engine.run(torch.randn(1, 4, 224, 224), width=0.5)
    bad = torch.randn(1, 3, 224, 224)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        engine.run(bad, width=0.5)


def test_profile_measures_saves_and_loads(model, tmp_path):
    engine = Engine(model, widths=(1.0, 0.5, 0.1))
    profile = engine.profile(batch_sizes=(1, 2), repeats=1)
    assert profile.batch_sizes == [1, 2] and profile.widths(2) == [0.1, 0.5, 1.0]
    assert all(profile.ms(b, w) > 0 for b in (1, 2) for w in (0.1, 0.5, 1.0))
    path = tmp_path / "profile.json"
    engine.save_profile(path)
    other = Engine(model, widths=(1.0, 0.5, 0.1))
    assert other.load_profile(path, refresh=False).latency_ms == profile.latency_ms
    assert other.choose(1, latency_ms=1e6).width == 1.0


def saved_profile_with(engine: Engine, path, field: str, value: str):
    """Profile ``engine``, save it to ``path`` and change one fingerprint field in the file."""
    engine.profile(batch_sizes=(1,), repeats=1)
    engine.save_profile(path)
    data = json.loads(path.read_text())
    data["fingerprint"][field] = value
    path.write_text(json.dumps(data))
    return path


def test_stale_profile_is_refused_or_refreshed(model, tmp_path):
    engine = Engine(model, widths=(1.0, 0.1))
    path = saved_profile_with(engine, tmp_path / "profile.json", "device", "some other GPU")
    with pytest.raises(ValueError, match="device: profile 'some other GPU'"):
        engine.load_profile(path, refresh=False)
    with pytest.warns(UserWarning, match="stale"):
        fresh = engine.load_profile(path)
    assert fresh.fingerprint == engine.fingerprint() and fresh.fingerprint["graphs"] == "eager"
    assert LatencyProfile.load(path).fingerprint == fresh.fingerprint  # the file was rewritten


def test_profile_measured_with_cuda_graphs_is_stale_for_an_eager_engine(model, tmp_path):
    """Graph replay and eager runs differ in latency as much as two devices do: the fingerprint must tell."""
    engine = Engine(model, widths=(1.0, 0.1))
    path = saved_profile_with(engine, tmp_path / "profile.json", "graphs", "buckets 1,2,4")
    with pytest.raises(ValueError, match="graphs: profile 'buckets 1,2,4', now 'eager'"):
        engine.load_profile(path, refresh=False)


def test_profile_of_other_weights_is_stale(model):
    other = tiny_model()
    with torch.no_grad():
        other.blocks[0].norm1.weight.add_(1.0)
    stale = synthetic_profile(model, {1: {1.0: 1.0}}).stale_fields(fingerprint(other))
    assert [s.split(":")[0] for s in stale] == ["params"]


def test_not_a_profile_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="is not a slimkern latency profile"):
        LatencyProfile.load(path)


def test_one_weight_copy_however_many_widths(model):
    before = tensor_storage_bytes(model)
    engine = Engine(model)
    x = torch.randn(1, 3, 224, 224)
    for budget in (dict(width=1.0), dict(width=0.5), dict(flops=0.3), dict(flops=0.2), dict(width=0.01)):
        engine.run(x, **budget)
    assert tensor_storage_bytes(model) == before == sum(p.untyped_storage().nbytes() for p in model.parameters())
