"""``model.prepare``: raw sensor values with shuffled, aliased, extra bands -> exactly the hand-made input, per family.

The expected tensors are built here in float64 numpy from the published recipe of each checkpoint (bands in the
model's order, unit scaling, then its normalisation), independently of slimkern's code path.
"""

import numpy as np
import pytest
import torch

from slimkern import bands as B
from slimkern.prepare import Prepared
from tests.helpers import tiny_model

SMALL = {"depth": 1, "dim": 64, "num_heads": 2}
SIZE = 32


def model_of(name: str, **overrides):
    overrides = {**SMALL, **overrides}
    if name.startswith("prithvi"):
        overrides["dim"] = 64  # 3-D sin-cos positions split dim into sixteenths
    return tiny_model(name, **overrides)


def raw_dn(bands, batch=2, size=SIZE, seed=0, low=100.0, high=4000.0) -> np.ndarray:
    """Plausible raw DN per band: smooth fields plus texture, a different level per band."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(low, high, len(bands))[None, :, None, None]
    field = rng.normal(size=(batch, len(bands), size, size))
    return np.clip(level * (1 + 0.3 * field), 0, None).round()


def shuffled(raw: np.ndarray, names, extra: str = "NDVI", seed: int = 1):
    """``raw`` with its bands permuted plus one extra band the model does not use; the permuted names."""
    order = np.random.default_rng(seed).permutation(len(names))
    extra_band = np.full_like(raw[:, :1], 7.0)
    return np.concatenate([raw[:, order], extra_band], axis=1), [names[i] for i in order] + [extra]


def standardised(raw, mean, std, scale=1.0):
    shape = (1, -1) + (1,) * (raw.ndim - 2)
    return (raw * scale - np.asarray(mean).reshape(shape)) / np.asarray(std).reshape(shape)


def assert_close(prepared: Prepared, want: np.ndarray, tol: float = 1e-5):
    got = prepared.x.double().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# -- one test per family: shuffled raw DN + names == hand-made ---------------------------------------
@pytest.mark.parametrize("name", ["satmae", "scalemae_vitl", "mae_vitb16", "dinov2_vitb14", "vit_tiny_eurosat"])
def test_rgb_families(name):
    model = model_of(name)
    spec = model.spec
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, SIZE, SIZE)).astype(np.float64)
    mixed, names = shuffled(raw, ["red", "G", "blue"])
    p = model.prepare(mixed, bands=names, units="DN")
    assert p.bands == ("R", "G", "B") and "dropped band(s) NDVI" in p.notes[0] and p.inputs == {}
    assert_close(p, standardised(raw, spec.mean, spec.std, scale=1 / 255))
    # 0-1 pixel values (ToTensor) are the same input
    assert_close(model.prepare(raw / 255, bands=["R", "G", "B"], units="reflectance"), p.x.double().numpy())


def test_sentinel2_l1c_ssl4eo_scales_by_1e4():
    model = model_of("ssl4eo_vits16_moco")
    raw = raw_dn(B.S2_BANDS)
    mixed, names = shuffled(raw, ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"])
    p = model.prepare(mixed, bands=names)  # units default to the spec's: DN
    assert p.bands == B.S2_BANDS and p.units == "DN"
    assert_close(p, raw * 1e-4)


@pytest.mark.parametrize("name", ["softcon_vits14_s2", "terramind_base"])
def test_sentinel2_standardised_families(name):
    model = model_of(name)
    spec = model.spec
    raw = raw_dn(spec.bands)
    mixed, names = shuffled(raw, list(spec.bands))
    assert_close(model.prepare(mixed, bands=names, units="DN"), standardised(raw, spec.mean, spec.std))
    # reflectance (0-1) is DN / 10000; a baseline >= 04.00 product carries +1000 (add_offset=-1000 removes it)
    assert_close(model.prepare(raw / 10000, bands=list(spec.bands), units="reflectance"),
                 standardised(raw, spec.mean, spec.std))
    assert_close(model.prepare(raw + 1000, bands=list(spec.bands), add_offset=-1000),
                 standardised(raw, spec.mean, spec.std))


def test_sentinel1_softcon_in_db_or_linear():
    model = model_of("softcon_vits14_s1")
    db = -25 + 15 * np.random.default_rng(0).random((2, 2, SIZE, SIZE))
    want = standardised(db, (-12.59, -20.26), (5.26, 5.91))
    assert_close(model.prepare(db[:, ::-1], bands=["vh", "vv"], units="dB"), want)
    assert_close(model.prepare(10 ** (db / 10), bands=["VV", "VH"], units="linear"), want, tol=1e-4)
    with pytest.raises(ValueError, match="takes SAR backscatter"):
        model.prepare(db, bands=["VV", "VH"], units="DN")


def test_satmae_ms_keeps_sentinel_normalize():
    model = model_of("satmae_vitl_ms", channel_embed=32)
    spec = model.spec
    raw = raw_dn(B.S2_BANDS, size=24)  # all 13 bands, as the fMoW-Sentinel GeoTIFFs
    mixed, names = shuffled(raw, list(B.S2_BANDS))
    p = model.prepare(mixed, bands=names, units="DN")
    keep = [B.S2_BANDS.index(b) for b in spec.bands]  # --dropped_bands 0 9 10
    m, s = (np.asarray(v)[None, :, None, None] for v in (spec.mean, spec.std))
    official = np.clip((raw[:, keep] - (m - 2 * s)) / (4 * s) * 255, 0, 255).astype(np.uint8) / 255.0
    assert p.bands == spec.bands and all(b in p.notes[0] for b in ("B01", "B09", "B10", "NDVI"))
    assert_close(p, official, tol=1e-6)


def test_croma_picks_its_encoder_by_the_bands_given():
    model = model_of("croma_base", depth=2)
    optical = raw_dn(B.S2_L2A_BANDS, batch=3)
    radar = -20 + 5 * np.random.default_rng(1).normal(size=(3, 2, SIZE, SIZE))

    def official(x):  # README: per band over the batch, mean +- 2 std -> [0, 1], 8-bit
        m, s = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), ddof=1, keepdims=True)
        return np.clip((x - (m - 2 * s)) / (4 * s) * 255, 0, 255).astype(np.uint8) / 255.0

    mixed, names = shuffled(np.concatenate([optical, radar], axis=1), list(B.S2_L2A_BANDS) + ["VV", "VH"])
    joint = model.prepare(mixed, bands=names)
    assert joint.bands == B.S2_L2A_BANDS + ("VV", "VH")
    assert_close(joint, official(np.concatenate([optical, radar], axis=1)), tol=1e-6)
    only_optical = model.prepare(optical[:, ::-1], bands=list(B.S2_L2A_BANDS)[::-1])
    assert only_optical.bands == B.S2_L2A_BANDS
    assert_close(only_optical, official(optical), tol=1e-6)
    with pytest.raises(ValueError, match=r"missing B05\); or .*VV, VH \(missing VH\)"):
        model.prepare(np.concatenate([optical[:, :4], optical[:, 5:], radar[:, :1]], axis=1),
                      bands=[b for b in B.S2_L2A_BANDS if b != "B05"] + ["VV"])


@pytest.mark.parametrize("name", ["prithvi_eo_v1_100", "prithvi_eo_v2_300_tl"])
def test_hls_prithvi_time_series(name):
    model = model_of(name)
    spec = model.spec
    raw = raw_dn(range(6 * 3), size=SIZE).reshape(2, 6, 3, SIZE, SIZE)  # [B, C, T, H, W]
    s30 = ["B02", "B03", "B04", "B8A", "B11", "B12"]  # an HLS S30 granule's band names
    order = [3, 0, 5, 1, 4, 2]
    p = model.prepare(raw[:, order], bands=[s30[i] for i in order])
    assert p.bands == spec.bands and p.x.shape == (2, 6, 3, SIZE, SIZE)
    assert_close(p, standardised(raw, spec.mean, spec.std))
    model.run(p.x, 0.5, **p.inputs)  # TL without time and location: those encodings are skipped
    with pytest.raises(ValueError, match="missing NIR_NARROW"):
        model.prepare(raw, bands=["BLUE", "GREEN", "RED", "B08", "SWIR_1", "SWIR_2"])  # B08 is not NIR_NARROW


@pytest.mark.parametrize("name, table", [
    ("dofa_base", {"B02": 0.49, "B04": 0.665, "B08": 0.842, "B12": 2.19}),
    ("dofa_v2_base", {"B02": 0.49, "B04": 0.665, "B08": 0.842, "B12": 2.19}),
])
def test_dofa_fills_wavelengths_and_standardises_with_data_set_statistics(name, table):
    model = model_of(name)
    raw = raw_dn(list(table))
    mixed, names = shuffled(raw, list(table))
    mean, std = raw.mean(axis=(0, 2, 3)) + 10, raw.std(axis=(0, 2, 3)) * 1.5
    order = [list(table).index(n) for n in names[:-1]]
    stats = (list(mean[order]) + [0.0], list(std[order]) + [1.0])
    p = model.prepare(mixed, bands=names, stats=stats)
    assert p.bands == tuple(names[:-1]) and p.inputs == {"wavelengths": tuple(table[b] for b in names[:-1])}
    assert_close(p, standardised(raw[:, order], mean[order], std[order]))
    batch = model.prepare(raw, bands=list(table))  # no stats: the batch's own (unbiased) statistics, noted
    assert any("batch's own" in note for note in batch.notes)
    assert_close(batch, standardised(raw, raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3), ddof=1)))
    terratorch = model_of(name, wavelength_table="terratorch").prepare(raw, bands=list(table))
    assert terratorch.inputs["wavelengths"] == (0.49, 0.665, 0.832, 2.2)
    runnable = model.prepare(mixed, bands=names, stats=stats, size=model.spec.patch_size * 2)
    model.run(runnable.x, 0.5, **runnable.inputs)


def test_copernicus_fm_fills_spectra_for_any_band_subset():
    model = model_of("copernicus_fm_base")
    spec = model.spec
    bands = ["B04", "B8A", "B02"]
    raw = raw_dn(bands)
    p = model.prepare(raw, bands=["red", "nir08", "blue"])
    assert p.bands == ("B04", "B8A", "B02")
    assert p.inputs == {"wavelengths": (665.0, 860.0, 490.0), "bandwidths": (30.0, 20.0, 65.0)}
    index = [spec.bands.index(b) for b in p.bands]
    assert_close(p, standardised(raw, np.asarray(spec.mean)[index], np.asarray(spec.std)[index]))
    model.run(p.x, 0.5, **p.inputs)


def test_panopticon_takes_sar_by_name():
    model = model_of("panopticon_vitb14", attn_dim=48, channel_heads=4)
    raw = np.concatenate([raw_dn(["B04", "B08"]), -15 + np.random.default_rng(2).normal(size=(2, 1, SIZE, SIZE))], 1)
    raw = raw[..., :28, :28]
    stats = ([900.0, 2500.0, -14.0], [500.0, 900.0, 4.0])
    p = model.prepare(raw[:, ::-1], bands=["VV", "B8", "B4"], stats=tuple(s[::-1] for s in stats))
    assert p.inputs == {"wavelengths": ("VV", 0.842, 0.665)} and p.bands == ("VV", "B08", "B04")
    assert_close(p, standardised(raw, *stats)[:, ::-1])
    model.run(p.x, 0.5, **p.inputs)


# -- what cannot pass silently ---------------------------------------------------------------------
def test_bands_must_be_named():
    model = model_of("ssl4eo_vits16_moco")
    raw = raw_dn(B.S2_BANDS)
    with pytest.raises(ValueError, match=r"name the bands of raw.*B01, B02.*pass bands=model.spec.bands"):
        model.prepare(raw, bands=None)
    with pytest.raises(ValueError, match=r"12 band names .* for 13 bands of raw"):
        model.prepare(raw, bands=list(B.S2_L2A_BANDS))
    p = model.prepare(raw, bands=model.spec.bands)  # raw already in the model's order: say so explicitly
    assert_close(p, raw * 1e-4)


def test_missing_bands_are_listed_with_what_was_given():
    model = model_of("terramind_base")
    raw = raw_dn(["B02", "B03", "B04", "B08"])
    with pytest.raises(ValueError, match=r"lacks bands this model needs: B01, .* \(missing B01, B05, B06, B07, B8A, "
                                         r"B09, B11, B12\)\. Given: blue, green, red, nir, NDVI \(not recognised: "
                                         r"NDVI\)"):
        model.prepare(np.concatenate([raw, raw[:, :1]], 1), bands=["blue", "green", "red", "nir", "NDVI"])


def test_units_and_arguments_are_checked():
    model = model_of("terramind_base")
    raw = raw_dn(B.S2_L2A_BANDS)
    names = list(B.S2_L2A_BANDS)
    with pytest.raises(ValueError, match="units must be one of DN, reflectance, dB, linear"):
        model.prepare(raw, bands=names, units="percent")
    with pytest.raises(ValueError, match="add_offset applies to DN"):
        model.prepare(raw / 1e4, bands=names, units="reflectance", add_offset=-1000)
    with pytest.raises(ValueError, match="stats= is for models normalised by the data set"):
        model.prepare(raw, bands=names, stats=([0.0] * 12, [1.0] * 12))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        model.prepare(raw.tolist(), bands=names)
    with pytest.raises(ValueError, match=r"raw must be a non-empty \[B, C, H, W\]"):
        model.prepare(raw[0], bands=names)
    with pytest.raises(ValueError, match="bands 'B8' and 'nir' both denote B08"):
        model.prepare(raw, bands=["B8"] + names[1:7] + ["nir"] + names[8:])


def test_resampling_to_native_gsd_and_size():
    model = model_of("terramind_base")
    raw = torch.from_numpy(raw_dn(B.S2_L2A_BANDS, size=16))
    p = model.prepare(raw, bands=model.spec.bands, gsd=20.0)
    assert p.x.shape[-2:] == (32, 32) and "from 20 m to the pretraining 10 m" in p.notes[0]
    native = model.prepare(raw, bands=model.spec.bands, size="native")
    assert native.x.shape[-2:] == (224, 224)
    assert model.prepare(raw, bands=model.spec.bands, size=(32, 48)).x.shape[-2:] == (32, 48)
    assert model_of("satmae").prepare(np.zeros((1, 3, 8, 8)) + 9, bands=["R", "G", "B"], gsd=0.5).notes == (
        "gsd 0.5 m kept: the pretraining GSD varies per image",)
    with pytest.raises(ValueError, match="gsd must be the positive ground sample distance"):
        model.prepare(raw, bands=model.spec.bands, gsd=0)


def test_integer_and_big_endian_arrays():
    model = model_of("ssl4eo_vits16_moco")
    raw = raw_dn(B.S2_BANDS)
    want = model.prepare(raw, bands=B.S2_BANDS).x
    torch.testing.assert_close(model.prepare(raw.astype(np.uint16), bands=B.S2_BANDS).x, want)
    torch.testing.assert_close(model.prepare(raw.astype(">f4"), bands=B.S2_BANDS).x, want)


FIXED = ["satmae", "satmae_vitl_ms", "scalemae_vitl", "ssl4eo_vits16_moco", "softcon_vits14_s2", "softcon_vits14_s1",
         "terramind_base", "mae_vitb16", "dinov2_vitb14", "vit_tiny_eurosat", "prithvi_eo_v1_100", "croma_base"]


@pytest.mark.parametrize("name", FIXED)
def test_a_missing_band_raises_with_the_list_for_every_family(name):
    model = model_of(name, **{"satmae_vitl_ms": {"channel_embed": 32}, "croma_base": {"depth": 2}}.get(name, {}))
    bands = list(model.spec.accepted_band_sets[-1])[1:]  # the smallest accepted set without its first band
    with pytest.raises(ValueError, match=rf"missing {model.spec.accepted_band_sets[-1][0]}\b.*Given: "
                                         rf"{', '.join(bands)}"):
        model.prepare(np.ones((1, len(bands), 16, 16)), bands=bands)


@pytest.mark.parametrize("name", ["dofa_base", "copernicus_fm_base", "panopticon_vitb14"])
def test_wavelength_models_refuse_bands_they_cannot_place(name):
    model = model_of(name, **({"attn_dim": 48, "channel_heads": 4} if name.startswith("panopticon") else {}))
    with pytest.raises(ValueError, match="none of the bands NDVI, cloud_mask is known to this model; it takes B01"):
        model.prepare(np.ones((1, 2, 16, 16)), bands=["NDVI", "cloud_mask"])
