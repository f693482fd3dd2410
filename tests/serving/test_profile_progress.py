"""Latency profiles (issue 13 item 14): progress while they are measured, and latencies monotone in width, so
that measurement noise never routes a latency budget to a wider width than the measurements allow."""

import json

import pytest

from slimkern import Engine
from slimkern.serving import LatencyProfile, command
from slimkern.serving.profile import fingerprint
from tests.helpers import tiny_model

WIDTHS = (0.01, 0.1, 0.5, 1.0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def scripted_engine(model, monkeypatch, times: dict[float, list[float]]) -> Engine:
    """An engine whose measurements of width w are ``times[w]`` in turn (the last one repeated), not a clock."""
    engine = Engine(model, widths=WIDTHS)
    measured: list[float] = []
    real_execute = Engine.execute
    calls = {w: 0 for w in times}

    def execute(self, x, choice, output="pooled", **inputs):
        measured.append(choice.width)
        return real_execute(self, x, choice, output, **inputs)

    def median_ms(self, fn, repeats):
        fn()
        width = measured[-1]
        calls[width] += 1
        return times[width][min(calls[width], len(times[width])) - 1]

    monkeypatch.setattr(Engine, "execute", execute)
    monkeypatch.setattr(Engine, "_median_ms", median_ms)
    return engine


def latencies(profile: LatencyProfile, batch: int = 1) -> list[float]:
    return [profile.ms(batch, w) for w in WIDTHS]


def test_a_noise_spike_at_a_narrow_width_is_measured_again(model, monkeypatch):
    engine = scripted_engine(model, monkeypatch, {0.01: [300.0, 10.0], 0.1: [20.0], 0.5: [50.0], 1.0: [100.0]})
    profile = engine.profile(batch_sizes=(1,), repeats=1, progress=False)
    assert latencies(profile) == [10.0, 20.0, 50.0, 100.0]
    assert engine.choose(1, latency_ms=60).width == 0.5


def test_a_wider_width_never_shows_a_lower_latency(model, monkeypatch):
    # 0.5 measures slower than 1.0 twice: the profile cannot say that 1.0 fits a budget 0.5 does not
    engine = scripted_engine(model, monkeypatch, {0.01: [10.0], 0.1: [20.0], 0.5: [150.0, 140.0], 1.0: [100.0]})
    profile = engine.profile(batch_sizes=(1,), repeats=1, progress=False)
    values = latencies(profile)
    assert values == sorted(values) and values == [10.0, 20.0, 140.0, 140.0]
    assert engine.choose(1, latency_ms=120).width == 0.1  # not 1.0, measured once at 100 ms


def test_a_saved_non_monotone_profile_is_made_monotone_on_load(model, tmp_path):
    profile = LatencyProfile(fingerprint(model), "attn+ffn", "pooled", (224, 224))
    for width, ms in zip(WIDTHS, (900.0, 20.0, 50.0, 40.0), strict=True):
        profile.record(1, width, ms)
    path = tmp_path / "old.json"
    profile.save(path)  # as an older slimkern saved it: raw medians
    assert json.loads(path.read_text())["latency_ms"]["1"]["1.0"] == 40.0
    loaded = LatencyProfile.load(path)
    assert latencies(loaded) == [900.0] * 4
    engine = Engine(model, widths=WIDTHS)
    engine.latency_profile = loaded
    with pytest.raises(ValueError, match="cannot be met"):
        engine.choose(1, latency_ms=100)


def test_profile_shows_progress(model, capsys):
    Engine(model, widths=(1.0, 0.1)).profile(batch_sizes=(1, 2), repeats=1, progress=True)
    err = capsys.readouterr().err
    assert "latency profile" in err and "4/4" in err


def test_serve_profile_shows_progress(model, monkeypatch, tmp_path, capsys):
    import slimkern.api

    monkeypatch.setattr(slimkern.api, "load", lambda *args, **kwargs: model)
    started = []
    pytest.importorskip("uvicorn", reason="the serve command needs the 'serve' extra")
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    from slimkern.cli import build_parser

    args = build_parser().parse_args(["serve", "satmae", "--widths", "1,0.1", "--profile", str(tmp_path / "p.json"),
                                      "--profile-batches", "1"])
    assert command.run(args) == 0 and started
    assert "latency profile" in capsys.readouterr().err
    assert (tmp_path / "p.json").exists()
