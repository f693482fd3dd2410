"""The input contract of every registered checkpoint: complete, typed, cited; band aliases; named choices."""

import dataclasses
import json
import types
import typing
import warnings

import pytest
import torch

import slimkern
from slimkern import bands as B
from slimkern.api import build_meta
from slimkern.cli import main
from slimkern.registry import get_cfg, list_models
from slimkern.spec import CITED, SOURCE_KINDS, Choice, InputSpec, Source, WavelengthTable, cite
from tests.helpers import tiny_model

NAMES = sorted({get_cfg(n).name for n in list_models()})
# pretraining GSD varies per image (fMoW, multi-sensor mixes) or the data are photographs
GSD_VARIES = {"satmae_vitl_rgb", "scalemae_vitl", "dofa_base", "dofa_large", "dofa_v2_base", "dofa_v2_large",
              "panopticon_vitb14", "mae_vitb16", "dinov2_vitb14"}
CANONICAL = set(B.S2_BANDS + B.HLS_BANDS + B.RGB_BANDS + B.SAR_BANDS)


def is_instance(value, annotation) -> bool:
    """``isinstance`` for the annotations InputSpec uses (unions, variadic and fixed tuples, classes)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(is_instance(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(is_instance(v, args[0]) for v in value)
        return len(value) == len(args) and all(is_instance(v, a) for v, a in zip(value, args, strict=True))
    if annotation is float:
        return isinstance(value, float)
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_has_a_complete_typed_cited_spec(name):
    cfg = get_cfg(name)
    spec = build_meta(name).spec
    assert spec is cfg.spec
    hints = typing.get_type_hints(InputSpec)
    for field in dataclasses.fields(InputSpec):
        value = getattr(spec, field.name)
        assert is_instance(value, hints[field.name]), (field.name, value)
        if isinstance(value, str):
            assert value.strip(), field.name
    assert set(dict(spec.sources)) >= set(CITED)
    for fact in (*CITED, "wavelengths"):
        source = spec.source(fact)
        assert source.kind in SOURCE_KINDS and len(source.ref) > 10, (fact, source)
    assert set(spec.bands) <= CANONICAL and spec.bands == cfg.bands
    optical = [w for b, w in zip(spec.bands, spec.wavelengths_um, strict=True) if b not in B.SAR_BANDS]
    assert all(w is not None and 0.3 <= w <= 30 for w in optical)
    assert spec.patch_size == cfg.arch.patch_size and spec.image_size % spec.patch_size == 0
    assert (spec.gsd_m is None) == (name in GSD_VARIES)
    assert spec.frames == getattr(cfg.arch, "num_frames", 1)
    assert (spec.mean is None) == (spec.normalization in ("batch_rescale", "dataset"))
    if spec.unit == "DN":
        assert spec.quantification in (255.0, 10000.0) and spec.scale in (1.0, 1 / 255, 1e-4)
    json.dumps(spec.to_dict())  # JSON-ready
    for choice in spec.choices:
        assert choice.value == choice.options[0].name  # the first option is today's default
        for option in choice.options:
            assert option.source.kind in SOURCE_KINDS and option.effect


def test_rgb_models_scale_8_bit_pixels_and_s2_dn_models_do_not():
    assert get_cfg("satmae").spec.scale == 1 / 255 and get_cfg("satmae").spec.quantification == 255.0
    assert get_cfg("ssl4eo_vits16_moco").spec.scale == 1e-4
    assert get_cfg("prithvi_eo_v2_300").spec.scale == 1.0 and get_cfg("prithvi_eo_v2_300").spec.gsd_m == 30.0
    assert get_cfg("softcon_vits14_s1").spec.unit == "dB"
    assert get_cfg("croma_base").spec.accepted_band_sets[1] == B.S2_L2A_BANDS


def test_spec_refuses_incomplete_or_inconsistent_facts():
    spec = get_cfg("satmae").spec
    with pytest.raises(ValueError, match="no source for gsd_m"):
        dataclasses.replace(spec, sources=tuple((k, v) for k, v in spec.sources if k != "gsd_m"))
    with pytest.raises(ValueError, match=r"unit 'reflectance' not in \('DN', 'dB', 'any'\)"):
        dataclasses.replace(spec, unit="reflectance")
    with pytest.raises(ValueError, match="one entry per band"):
        dataclasses.replace(spec, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="dataset takes its statistics from the data"):
        dataclasses.replace(spec, normalization="dataset")
    with pytest.raises(ValueError, match="a source needs a kind"):
        Source("blog", "x")
    with pytest.raises(ValueError, match="value 'b' must be one of"):
        Choice("x", "b", spec.choices)


@pytest.mark.parametrize("name, targets, want", [
    ("B8", B.S2_BANDS, "B08"), ("b08", B.S2_BANDS, "B08"), ("B08A", B.S2_BANDS, "B8A"), ("red", B.S2_BANDS, "B04"),
    ("nir", B.S2_BANDS, "B08"), ("NIR", B.HLS_BANDS, "NIR_NARROW"), ("nir08", B.S2_BANDS, "B8A"),
    ("B8A", B.HLS_BANDS, "NIR_NARROW"), ("B11", B.HLS_BANDS, "SWIR_1"), ("swir 2", B.HLS_BANDS, "SWIR_2"),
    ("B04", B.RGB_BANDS, "R"), ("red", B.RGB_BANDS, "R"), ("R", B.S2_BANDS, "B04"), ("vv", B.SAR_BANDS, "VV"),
    ("B08", B.HLS_BANDS, None),  # the broad NIR band has no HLS counterpart (NIR_NARROW is S2's B8A)
    ("B13", B.S2_BANDS, None), ("NDVI", B.S2_BANDS, None), ("B10", B.S2_L2A_BANDS, None),
])
def test_one_alias_table_resolves_band_names_per_sensor(name, targets, want):
    assert B.resolve_band(name, targets) == want


def test_two_names_for_one_band_are_refused():
    with pytest.raises(ValueError, match="bands 'B8' and 'nir' both denote B08"):
        B.resolve_bands(["B8", "nir"], B.S2_BANDS)


def test_named_choices_set_the_wavelength_table_and_architecture():
    dofa = tiny_model("dofa_base", wavelength_table="terratorch")
    assert dict(zip(dofa.spec.bands, dofa.spec.wavelengths_um, strict=True))["B08"] == 0.832
    assert dofa.spec.choice("wavelength_table").value == "terratorch"
    default = tiny_model("dofa_base")
    assert dict(zip(default.spec.bands, default.spec.wavelengths_um, strict=True))["B08"] == 0.842
    x = torch.randn(1, 12, 64, 64)
    # run()'s default wavelengths follow the chosen table: B08 alone moves the embedding
    assert not torch.allclose(dofa.run(x, 0.5), default.run(x, 0.5))
    cop = build_meta("copernicus_fm_base", wavelength_table="esa", layer_norm="torchgeo")
    assert cop.spec.wavelengths_um[0] == 0.443 and cop.cfg.arch.norm_eps == 1e-5 and cop.norm_eps == 1e-5
    pan = build_meta("panopticon_vitb14", pos_resize="torchgeo")
    assert (pan.cfg.arch.interpolate_offset, pan.cfg.arch.interpolate_antialias) == (0.0, True)
    with pytest.raises(ValueError, match=r"unknown choice pos_resize; this model's choices: wavelength_table "
                                         r"\(dofa\|esa\|terratorch\)"):
        default.spec.choose(pos_resize="torchgeo")
    with pytest.raises(ValueError, match="wavelength_table='nasa' is not an option; choose one of dofa, esa"):
        build_meta("dofa_base", wavelength_table="nasa")
    with pytest.raises(TypeError, match=r"named choices: \['pos_resize'\]"):
        build_meta("panopticon_vitb14", pos_resise="torchgeo")


def test_copernicus_fm_default_spectra_come_from_its_table():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("copernicus_fm_base", depth=1, dim=64, num_heads=2)
    waves, widths = model.spectra(12)
    assert waves == (440.0, 490.0, 560.0, 665.0, 705.0, 740.0, 783.0, 842.0, 860.0, 940.0, 1610.0, 2190.0)
    assert widths[7] == 115.0
    esa = build_meta("copernicus_fm_base", wavelength_table="esa")
    assert esa.spectral_inputs(("B01", "B8A", "B09"))["wavelengths"] == (443.0, 865.0, 945.0)


def test_wavelength_table_lookup():
    table = WavelengthTable("t", Source("docs", "a test table"), (("B04", 0.665),), (("B04", 30.0),))
    assert table.wavelength("B04") == 0.665 and table.bandwidth("B04") == 30.0 and table.wavelength("B08") is None
    assert cite(b=table.source, a=table.source)[0][0] == "a"


def test_info_json_prints_the_spec(capsys):
    assert main(["info", "prithvi_eo_v2_300_tl", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"]["bands"] == list(B.HLS_BANDS) and info["input"]["gsd_m"] == 30.0
    assert info["input"]["unit"] == "DN" and info["input"]["frames"] == 4
    assert "terratorch" in info["input"]["sources"]["normalization"]
    assert info["run_inputs"] == ["temporal_coords", "location_coords"]
    assert main(["info", "dofa_base"]) == 0
    assert "choice         wavelength_table = dofa (options: dofa, esa, terratorch)" in capsys.readouterr().out
