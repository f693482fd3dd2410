"""run()'s input check: raw DN, 8-bit pixels, constant bands and wavelengths in other units are refused (or warned
about, or skipped), while plausible normalised input, including random N(0, 1), passes for every model."""

import warnings

import numpy as np
import pytest
import torch

from slimkern import bands as B
from slimkern.input_check import InputCheckWarning, _sample, input_problems
from slimkern.registry import get_cfg, list_models
from tests.helpers import tiny_model

SMALL = {"depth": 1, "dim": 64, "num_heads": 2}
NAMES = sorted({get_cfg(n).name for n in list_models()})


def model_of(name: str, **overrides):
    return tiny_model(name, **{**SMALL, **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_random_normal_input_is_plausible_for_every_model(name):
    spec = get_cfg(name).spec
    frames = (spec.frames,) if spec.frames > 1 else ()
    x = torch.randn(3, len(spec.bands), *frames, 40, 40)
    assert input_problems(x, spec.bands, [w for w in spec.wavelengths_um if w is not None], unit=spec.unit) == []


def test_raw_dn_where_reflectance_is_expected_raises():
    model = model_of("ssl4eo_vits16_moco")
    dn = torch.from_numpy(np.random.default_rng(0).uniform(300, 3000, (2, 13, 32, 32))).float()
    with pytest.raises(ValueError, match=r"band medians B01 \d+.* are beyond \+-50: raw digital numbers .*"
                                         r"model\.prepare\(raw, bands=\[\.\.\.\], units=\.\.\.\)"):
        model.run(dn, 0.5)
    # the wrong units given to prepare cannot pass silently either: DN read as reflectance is 10000x too large
    p = model.prepare(dn, bands=B.S2_BANDS, units="reflectance")
    with pytest.raises(ValueError, match="raw digital numbers"):
        model.run(p.x, 0.5)
    model.run(model.prepare(dn, bands=B.S2_BANDS, units="DN").x, 0.5)


def test_raw_decibels_where_standardised_backscatter_is_expected_raise():
    model = model_of("softcon_vits14_s1")
    db = torch.tensor([-12.0, -19.0]).view(1, 2, 1, 1) + torch.randn(2, 2, 28, 28)
    with pytest.raises(ValueError, match=r"band medians VV -1\d.*, VH -1\d.* are beyond \+-8: raw backscatter in dB"):
        model.run(db, 0.5)
    model.run(model.prepare(db, bands=["VV", "VH"], units="dB").x, 0.5)


def test_eight_bit_pixels_where_normalised_rgb_is_expected_raise():
    model = model_of("satmae")
    pixels = torch.randint(0, 256, (2, 3, 32, 32)).float()
    with pytest.raises(ValueError, match="every value is an integer in 0..255: 8-bit pixel values"):
        model.run(pixels, 0.5)
    model.run(model.prepare(pixels, bands=["R", "G", "B"], units="DN").x, 0.5)


def test_constant_band_raises_and_is_confirmed_on_the_full_batch():
    model = model_of("prithvi_eo_v2_300", dim=64)
    x = torch.randn(2, 6, 3, 32, 32)
    x[:, 3] = 0.0  # NIR_NARROW missing, zero-filled
    with pytest.raises(ValueError, match=r"band NIR_NARROW is constant \(0\) in the whole batch"):
        model.run(x, 0.5)
    y = torch.randn(1, 6, 64, 64)
    y[:, 2] = 1.0
    y[0, 2, 1, 1] = 2.0  # constant on the sampled grid (every 4th pixel), not in the image
    assert input_problems(y, get_cfg("prithvi_eo_v2_300").bands) == []


@pytest.mark.parametrize("name, wavelengths, match", [
    ("dofa_base", [665.0, 560.0, 490.0],
     "wavelengths 665, 560, 490 um are outside 0.3-30 um: nanometres where the model takes micrometres"),
    ("dofa_base", [0.665, 0.56, 0.049], "wavelength 0.049 um is outside 0.3-30 um: a frequency in GHz"),
    ("panopticon_vitb14", [0.665, 0.56, 490.0], "wavelength 490 um is outside 0.3-30 um: nanometres"),
    ("panopticon_vitb14", [0.665, 0.56, 5.405], "5.405 is Sentinel-1's C-band frequency in GHz"),
])
def test_wavelengths_in_other_units_raise(name, wavelengths, match):
    model = model_of(name, **({"attn_dim": 48, "channel_heads": 4} if name.startswith("panopticon") else {}))
    size = model.cfg.arch.patch_size * 2
    with pytest.raises(ValueError, match=match):
        model.run(torch.randn(1, 3, size, size), 0.5, wavelengths=wavelengths)


def test_copernicus_fm_wavelengths_in_micrometres_or_ghz_raise_radar_passes():
    model = model_of("copernicus_fm_base")
    x = torch.randn(1, 2, 32, 32)
    with pytest.raises(ValueError, match="wavelengths 0.000665, 0.00056 um are outside .* micrometres where the "
                                         "model takes nanometres"):
        model.run(x, 0.5, wavelengths=[0.665, 0.56], bandwidths=[30.0, 35.0])
    with pytest.raises(ValueError, match="wavelengths 0.005405, 0.005405 um are outside"):  # a frequency in GHz
        model.run(x, 0.5, wavelengths=[5.405, 5.405], bandwidths=[1e9, 1e9])
    model.run(x, 0.5, wavelengths=[5e7, 5e7], bandwidths=[1e9, 1e9])  # Sentinel-1: 5 cm, radar is not refused


def test_warn_and_off():
    model = model_of("satmae")
    pixels = torch.randint(0, 256, (1, 3, 32, 32)).float()
    with pytest.warns(InputCheckWarning, match="8-bit pixel values"):
        warned = model.run(pixels, 0.5, check="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(model.run(pixels, 0.5, check="off"), warned)
    with pytest.raises(ValueError, match="check must be one of 'error', 'warn', 'off'"):
        model.run(pixels, 0.5, check="strict")
    with pytest.raises(ValueError, match="8-bit"):
        model.run_widths(pixels, [0.5, 1.0])
    with pytest.raises(ValueError, match="8-bit"):
        model.validate(pixels, 0.5)


def test_croma_messages_name_the_modality_bands():
    model = model_of("croma_base", depth=2)
    radar = torch.randn(1, 2, 16, 16) - 20 * torch.tensor([0.0, 1.0]).view(1, 2, 1, 1) - 60.5  # dB, not rescaled
    with pytest.raises(ValueError, match=r"band medians VV -6\d.*, VH -8\d"):
        model.run(radar, 0.5)


def test_check_reads_a_fixed_size_sample_whatever_the_image():
    for shape in [(16, 13, 512, 512), (3, 6, 4, 100, 300), (1, 2, 8, 8)]:
        sample = _sample(torch.randn(*shape))
        assert sample.shape[0] == shape[1] and sample.shape[1] <= 2 * 16 * 16


def test_the_check_never_modifies_the_input():
    x = torch.randn(1, 3, 8, 8)
    before = x.clone()
    input_problems(x, ["R", "G", "B"])
    assert torch.equal(x, before)


# one model per family: raw values fed straight to run() never pass silently
FAMILY_RAW = {
    "satmae": "8-bit", "scalemae_vitl": "8-bit", "mae_vitb16": "8-bit", "dinov2_vitb14": "8-bit",
    "vit_tiny_eurosat": "8-bit", "satmae_vitl_ms": "DN", "croma_base": "DN", "dofa_base": "DN",
    "copernicus_fm_base": "DN", "prithvi_eo_v2_300_tl": "DN", "ssl4eo_vits16_moco": "DN", "softcon_vits14_s2": "DN",
    "terramind_base": "DN", "panopticon_vitb14": "DN",
}


@pytest.mark.parametrize("name", sorted(FAMILY_RAW))
def test_raw_values_fed_to_run_raise_for_every_family(name):
    overrides = {"satmae_vitl_ms": {"channel_embed": 32}, "panopticon_vitb14": {"attn_dim": 48, "channel_heads": 4},
                 "croma_base": {"depth": 2}}.get(name, {})
    model = model_of(name, **overrides)
    spec, p = model.spec, model.cfg.arch.patch_size
    bands = spec.accepted_band_sets[1] if name == "croma_base" else spec.bands  # CROMA: the optical encoder
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (1, len(bands), 2 * p, 2 * p)) if FAMILY_RAW[name] == "8-bit" else \
        rng.integers(200, 4000, (1, len(bands), 2 * p, 2 * p))
    inputs = model.spectral_inputs(bands) if spec.any_bands else {}
    match = "8-bit pixel values" if FAMILY_RAW[name] == "8-bit" else "raw digital numbers"
    with pytest.raises(ValueError, match=match):
        model.run(torch.from_numpy(raw).float(), 0.5, **inputs)
