"""Clear errors before any work (width, format, path, refused combinations, inputs), a failed verification removes the
file and exits non-zero, a missing extra names the pip command; the command line end to end."""

import json
import os
import re
import sys

import pytest
import torch

import slimkern
from slimkern.cli import main
from slimkern.export import MissingExtraError, VerificationError, formats, read_metadata
from slimkern.export.inputs import EXTRA_INPUTS
from slimkern.registry import get_cfg, list_models
from slimkern.zoo.eurosat_vit import WEIGHTS
from tests.export.cases import tiny


@pytest.fixture(scope="module")
def model():
    return tiny("satmae")


@pytest.mark.parametrize("width", [0.0, -0.1, 1.5, float("nan")])
def test_width_outside_the_range(model, width, tmp_path):
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
        slimkern.export(model, width, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_unknown_format_and_suffix(model, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; expected one of pt2, onnx, aoti"):
        slimkern.export(model, 0.5, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match="cannot tell the format from"):
        slimkern.export(model, 0.5, tmp_path / "m.bin")
    with pytest.raises(ValueError, match="a onnx export is a .onnx file"):
        slimkern.export(model, 0.5, tmp_path / "m.pt2", format="onnx")


def test_unwritable_paths(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder .* does not exist"):
        slimkern.export(model, 0.5, tmp_path / "missing" / "m.onnx")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        slimkern.export(model, 0.5, tmp_path / "file" / "m.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        slimkern.export(model, 0.5, tmp_path / "dir.onnx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(model, tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="permission denied"):
            slimkern.export(model, 0.5, tmp_path / "m.onnx")
    finally:
        tmp_path.chmod(0o700)


def test_refused_family_format_and_dtype(model, tmp_path, monkeypatch):
    monkeypatch.setitem(formats.REFUSED, ("satmae", "onnx"), "a reason given in the table")
    with pytest.raises(NotImplementedError, match="onnx export of the satmae family is not supported: a reason"):
        slimkern.export(model, 0.5, tmp_path / "m.onnx")
    half = tiny("dinov2_vitb14").to(torch.bfloat16)
    with pytest.raises(NotImplementedError, match="onnx export in bfloat16 is not supported .*use pt2 or aoti"):
        slimkern.export(half, 0.5, tmp_path / "h.onnx")
    assert not os.listdir(tmp_path)


def test_input_choices(tmp_path):
    dofa, tl = tiny("dofa_base"), tiny("prithvi_eo_v2_100_tl")
    with pytest.raises(ValueError, match="wavelengths can only be a constant"):
        slimkern.export(dofa, 0.5, tmp_path / "m.pt2", inputs=("wavelengths",))
    with pytest.raises(ValueError, match="takes wavelengths; constants names res"):
        slimkern.export(dofa, 0.5, tmp_path / "m.pt2", constants={"res": 1.0})
    with pytest.raises(ValueError, match="location_coords given both as graph inputs and as constants"):
        slimkern.export(tl, 0.5, tmp_path / "m.pt2", inputs=("location_coords",),
                        constants={"location_coords": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"constant location_coords must be one image's value of shape \[2\]"):
        slimkern.export(tl, 0.5, tmp_path / "m.pt2", constants={"location_coords": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="frames is for multi-temporal models"):
        slimkern.export(dofa, 0.5, tmp_path / "m.pt2", frames=2)
    with pytest.raises(ValueError, match="latitudes in degrees"):  # the model's own check, before tracing
        slimkern.export(tl, 0.5, tmp_path / "m.pt2", constants={"location_coords": [120.0, 2.0]})
    with pytest.raises(TypeError, match="needs wavelengths"):  # Panopticon has no default band set
        slimkern.export(tiny("panopticon_vitb14"), 0.5, tmp_path / "m.pt2")
    assert not os.listdir(tmp_path)


def test_every_registered_input_is_known_to_export():
    for name in list_models():
        model_cls = get_cfg(name).model_cls
        assert set(model_cls.extra_inputs) <= set(EXTRA_INPUTS), name


def test_failed_verification_removes_the_file(model, tmp_path, monkeypatch):
    def off_by_a_little(format, path):
        artefact = formats_load(format, path)
        return lambda *inputs: artefact(*inputs) * 1.001

    formats_load = formats.load_runtime
    monkeypatch.setattr(formats, "load_runtime", off_by_a_little)
    with pytest.raises(VerificationError, match=r"relative errors batch 1: 0.001.* > tolerance 1e-05.*removed"):
        slimkern.export(model, 0.5, tmp_path / "m.pt2")
    assert not os.listdir(tmp_path)
    assert main(["export", "vit_tiny_eurosat", "--weights", str(WEIGHTS), "--width", "0.5", "--format", "pt2",
                 "--out", str(tmp_path / "m.pt2"), "--quiet"]) == 2
    assert not os.listdir(tmp_path)


def test_missing_extra_is_one_line(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of onnxruntime fails as if not installed
    expected = 'onnx export needs \'onnxruntime\', which is not installed: pip install "slimkern[export]"'
    with pytest.raises(MissingExtraError, match=re.escape(expected)):
        slimkern.export(model, 0.5, tmp_path / "m.onnx")
    assert main(["export", "vit_tiny_eurosat", "--width", "0.5", "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 3  # slimkern's exit code of a missing extra
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"slimkern export: error: {expected}"
    assert not os.listdir(tmp_path)


def test_command_line(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    assert main(["export", "vit_tiny_eurosat", "--weights", str(WEIGHTS), "--width", "0.1", "--format", "onnx",
                 "--out", str(path), "--output", "tokens", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "verified against run(): relative error batch 1" in out
    meta = read_metadata(path)
    assert meta["output"] == "tokens" and json.loads(meta["output_shape"]) == ["B", 65, 192]
    assert meta["mean"] == json.dumps(list(get_cfg("vit_tiny_eurosat").mean))
    assert main(["export", "vit_tiny_eurosat", "--width", "2", "--format", "onnx", "--out", str(path)]) == 2
    assert "width must be in (0, 1]" in capsys.readouterr().err
    assert main(["export", "vit_tiny_eurosat", "--width", "0.5", "--format", "pt2", "--out",
                 str(tmp_path / "no" / "m.pt2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_constant_parsing():
    from slimkern.export.command import parse_constant

    assert parse_constant("res=0.5") == ("res", 0.5)
    assert parse_constant("temporal_coords=[[2021, 152]]") == ("temporal_coords", [[2021, 152]])
    assert parse_constant("wavelengths=0.665,VV,0.49") == ("wavelengths", [0.665, "VV", 0.49])
    with pytest.raises(Exception, match="NAME=VALUE"):
        parse_constant("res")


def test_a_failing_step_is_named_and_leaves_no_file(model, tmp_path, monkeypatch):
    def broken_writer(format, program, path, metadata, names):
        open(path, "wb").write(b"half a file")
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(formats, "write", broken_writer)
    with pytest.raises(slimkern.export.ExportError, match="export of satmae_vitl_rgb failed while writing: disk full$"):
        slimkern.export(model, 0.5, tmp_path / "m.pt2")
    assert not os.listdir(tmp_path)
