"""Every zoo family exports to pt2 and ONNX at widths 1.0 and 0.07, reloads in its runtime and equals run().

The export verifies itself: it loads the written file in its runtime and compares batches of 1 and 5 with run();
the family tests assert those errors and the metadata round trip, the other tests reload files independently on
fresh inputs of other batch sizes. The zoo's other model classes (SatMAE RGB, Prithvi without TL, DOFA v2, SSL4EO
DINO and MAE, MAE baseline) run with SLIMKERN_TEST_EXPORT_ALL=1; AOTInductor is covered by test_aoti.py.
"""

import json
import os

import pytest
import torch

from slimkern.export import FORMATS, export, load_runtime, read_metadata
from slimkern.export.inputs import plan_inputs, run_kwargs, sample_inputs
from slimkern.export.metadata import KEYS
from slimkern.registry import get_cfg, list_models
from tests.export.cases import CONSTANTS, FAMILIES, ODD_WIDTH, other_classes, tiny
from tests.helpers import rel_error

SUFFIX = {"pt2": "pt2", "onnx": "onnx"}
OTHER_CLASSES = other_classes()


def reload_and_compare(model, result, width, batches=(2, 7), **options):
    """The written file, loaded again in its runtime, equals model.run on fresh inputs (``options``: the export's)."""
    run_options = {k: options.pop(k) for k in ("mode", "output") if k in options}
    plan = plan_inputs(model, image_size=model._image_size(options.get("image_size")), frames=options.get("frames"),
                       bands=options.get("bands"), inputs=options.get("inputs"), constants=options.get("constants"))
    artefact = load_runtime(result.format, result.path)
    generator = torch.Generator().manual_seed(123)
    for batch in batches:
        values = sample_inputs(plan, batch, model.dtype, generator)
        want = model.run(values[0], width, **run_options, **run_kwargs(plan, values[1:], batch))
        got = artefact(*values)
        assert got.shape == want.shape
        assert rel_error(got, want) <= 1e-5, (result.format, batch)


def test_every_family_has_a_test_model():
    assert sorted(get_cfg(name).family for name in FAMILIES) == sorted({get_cfg(n).family for n in list_models()})


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("width", [1.0, ODD_WIDTH])
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_exports_and_equals_run(name, width, fmt, tmp_path):
    check_family_export(name, width, fmt, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLIMKERN_TEST_EXPORT_ALL") != "1", reason="set SLIMKERN_TEST_EXPORT_ALL=1")
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("width", [1.0, ODD_WIDTH])
@pytest.mark.parametrize("name", OTHER_CLASSES)
def test_other_model_classes_export(name, width, fmt, tmp_path):
    check_family_export(name, width, fmt, tmp_path)


def check_family_export(name, width, fmt, tmp_path):
    model = tiny(name)
    path = tmp_path / f"{name}.{SUFFIX[fmt]}"
    result = export(model, width, path, format=fmt, constants=CONSTANTS.get(name))
    assert sorted(result.errors) == [1, 5] and max(result.errors.values()) <= 1e-5
    assert result.files == [str(path)] and path.stat().st_size == result.bytes > 0
    meta = read_metadata(path)
    assert meta == result.metadata and set(meta) == set(KEYS)
    assert meta["model"] == model.cfg.name and meta["format"] == fmt and float(meta["width"]) == width
    assert meta["plan"] == model.plan(width).summary() and int(meta["flops"]) > 0


def test_tokens_output_other_image_size_and_mode(tmp_path):
    """Non-native image size (position table resampled in the graph), token output, attention-only slimming."""
    model = tiny("dinov2_vitb14")
    options = {"output": "tokens", "mode": "attn", "image_size": 42}
    result = export(model, 0.3, tmp_path / "m.onnx", **options)
    assert json.loads(result.metadata["output_shape"]) == ["B", 1 + 3 * 3, 96]
    assert json.loads(result.metadata["inputs"])[0]["shape"] == ["B", 3, 42, 42]
    reload_and_compare(model, result, 0.3, **options)


def test_dynamic_batch_bounds(tmp_path):
    model = tiny("satmae")
    result = export(model, ODD_WIDTH, tmp_path / "m.pt2")
    artefact = load_runtime("pt2", result.path)
    x = torch.randn(256, 3, 32, 32)
    assert rel_error(artefact(x), model.run(x, ODD_WIDTH)) <= 1e-5
    with pytest.raises(Exception, match="256"):
        artefact(torch.randn(257, 3, 32, 32))


@pytest.mark.parametrize(("name", "fmt", "options"), [
    ("scalemae_vitl", "onnx", {"inputs": ("res",)}),
    ("copernicus_fm_base", "onnx", {"inputs": ("metadata",)}),  # every third image with unknown metadata
    ("prithvi_eo_v2_100_tl", "pt2", {"frames": 3}),  # coordinates are graph inputs by default
])
def test_per_image_inputs_as_graph_inputs(name, fmt, options, tmp_path):
    model = tiny(name)
    result = export(model, ODD_WIDTH, tmp_path / f"{name}.{fmt}", **options)
    names = [i["name"] for i in json.loads(result.metadata["inputs"])]
    assert names == ["x", *(options.get("inputs") or ("temporal_coords", "location_coords"))]
    reload_and_compare(model, result, ODD_WIDTH, **options)


def test_per_image_inputs_as_constants(tmp_path):
    """One image's values baked in and broadcast over the batch: the artefact equals run() with those values."""
    model = tiny("prithvi_eo_v2_100_tl")
    time, place = [[2021.0, 152.0]], [46.5, 7.9]
    result = export(model, ODD_WIDTH, tmp_path / "tl.pt2", constants={"temporal_coords": time,
                                                                     "location_coords": place})
    assert [i["name"] for i in json.loads(result.metadata["inputs"])] == ["x"]
    assert json.loads(result.metadata["constants"]) == {"temporal_coords": time, "location_coords": place}
    x = torch.randn(3, 6, 32, 32)
    want = model.run(x, ODD_WIDTH, temporal_coords=[time] * 3, location_coords=[place] * 3)
    assert rel_error(load_runtime("pt2", result.path)(x), want) <= 1e-5


def test_band_sets(tmp_path):
    """CROMA's optical and radar encoders by band count; DOFA with another band set baked in."""
    croma = tiny("croma_base")
    for bands in (12, 2):
        result = export(croma, ODD_WIDTH, tmp_path / f"croma{bands}.pt2", bands=bands)
        assert json.loads(result.metadata["inputs"])[0]["shape"][1] == bands
        assert int(result.metadata["flops"]) == croma.flops(ODD_WIDTH, modality="optical" if bands == 12 else "radar")
    dofa = tiny("dofa_base")
    waves = [0.49, 0.56, 0.665, 0.842]
    result = export(dofa, ODD_WIDTH, tmp_path / "dofa.pt2", constants={"wavelengths": waves})
    x = torch.randn(2, 4, 32, 32)
    assert rel_error(load_runtime("pt2", result.path)(x), dofa.run(x, ODD_WIDTH, wavelengths=waves)) <= 1e-5


def test_formats_are_the_documented_three():
    assert FORMATS == ("pt2", "onnx", "aoti")


def test_readme_table_lists_every_family_and_format():
    """README "Deploying one width": one row per family, a cell per format, a refused pair shows its reason."""
    from pathlib import Path

    from slimkern.export import REFUSED

    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Deploying one width")[1].split("\n## ")[0]
    header = "| family (test model) | " + " | ".join(FORMATS) + " |"
    assert header in section
    for name in FAMILIES:
        family = get_cfg(name).family
        row = next(line for line in section.splitlines() if line.startswith(f"| {family} (`{name}`) |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert cells == [REFUSED.get((family, f), "✓") for f in FORMATS], row
