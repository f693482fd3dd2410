"""Loading official checkpoint containers: unwrapping, prefixes, safety and clear errors."""

import argparse
import warnings

import pytest
import torch
from safetensors.torch import save_file

import slimkern
from slimkern.checkpoints import CheckpointError
from tests.helpers import TINY, rel_error, tiny_model


@pytest.fixture(scope="module")
def source():
    """A model with random weights and its state dict in the official (timm/MAE) layout."""
    model = tiny_model()
    return model, model.state_dict()


def mae_container(state: dict) -> dict:
    """What SatMAE's ``misc.save_model`` writes: encoder + decoder keys under 'model', plus training state."""
    model = dict(state)
    model["mask_token"] = torch.randn(1, 1, 64)
    model["decoder_embed.weight"] = torch.randn(64, 128)
    model["decoder_blocks.0.attn.qkv.weight"] = torch.randn(192, 64)
    model["decoder_pred.weight"] = torch.randn(768, 64)
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 799,
            "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="mae_vit_large_patch16", lr=1e-4)}


def load(weights, **kwargs):
    return slimkern.load("satmae", weights=weights, **{**TINY, **kwargs})


def assert_same_model(loaded, source_model):
    x = torch.randn(1, 3, 224, 224)
    for width in (1.0, 0.1):
        assert rel_error(loaded.run(x, width), source_model.run(x, width)) == 0.0


def test_official_container_round_trip(tmp_path, source):
    model, state = source
    path = tmp_path / "fmow_pretrain.pth"
    torch.save(mae_container(state), path)
    loaded = load(path)
    assert_same_model(loaded, model)
    # the official layout comes back out of state_dict(), bit for bit
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_plain_state_dict_and_module_prefix(tmp_path, source):
    model, state = source
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    assert_same_model(load(path), model)


def test_safetensors(tmp_path, source):
    model, state = source
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    assert_same_model(load(path), model)


def test_in_memory_state_dict_and_dtype(source):
    model, state = source
    half = load(state, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_loading_does_not_warn_but_random_init_does(source):
    _, state = source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(state)
    with pytest.warns(UserWarning, match="random weights"):
        slimkern.load("satmae", **TINY)


def test_missing_key(source):
    _, state = source
    broken = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing keys: blocks\.1\.mlp\.fc2\.bias"):
        load(broken)


def test_wrong_shape(source):
    _, state = source
    broken = dict(state, **{"blocks.0.attn.qkv.weight": torch.randn(384, 64)})
    with pytest.raises(CheckpointError, match=r"wrong shapes: blocks\.0\.attn\.qkv\.weight: \(384, 64\) "
                                              r"\(expected \(384, 128\)\)"):
        load(broken)


def test_unexpected_key(source):
    _, state = source
    with pytest.raises(CheckpointError, match=r"unexpected keys: fc_norm\.weight"):
        load(dict(state, **{"fc_norm.weight": torch.randn(128)}))


def test_wrong_model_lists_every_problem(source):
    _, state = source
    with pytest.raises(CheckpointError) as err:
        slimkern.load("satmae", weights=state)  # a ViT-L model given the tiny checkpoint
    message = str(err.value)
    assert "264 missing keys: blocks.2.norm1.weight" in message  # ViT-L has 24 blocks of 12 tensors, the file 2
    assert "wrong shapes: cls_token: (1, 1, 128) (expected (1, 1, 1024))" in message


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refuses_pickled_code(tmp_path, source, capsys):
    _, state = source
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load(path)
    assert "this must never run" not in capsys.readouterr().out


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.randn(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a state dict"):
        load(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read .* as a PyTorch checkpoint"):
        load(garbage)


def test_container_without_tensors(source):
    with pytest.raises(CheckpointError, match="not a tensor"):
        load({"weights": {"a": 1}, "epoch": 3})


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load(tmp_path / "nope.pth")


# -- issue 13 item 6: weights must be real floating point ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8, torch.int8, torch.complex64])
def test_weights_that_are_not_real_floating_point_are_refused(source, dtype):
    _, state = source
    bad = dict(state)
    bad["blocks.0.attn.qkv.weight"] = torch.ones(state["blocks.0.attn.qkv.weight"].shape, dtype=dtype)
    bad["norm.bias"] = torch.zeros(state["norm.bias"].shape, dtype=dtype)
    with pytest.raises(CheckpointError, match=rf"2 tensors not real floating point: blocks\.0\.attn\.qkv\.weight "
                                              rf"\({str(dtype).removeprefix('torch.')}\), norm\.bias"):
        load(bad, dtype=torch.float32)


# -- issue 13 item 7: pickled code is refused by name, and never runs ---------------------------------------------
class SystemCall:
    """Unpickling this would run a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _pickle_protocol_4(path, obj):
    import pickle

    path.write_bytes(pickle.dumps(obj, protocol=4))  # a plain pickle, not torch.save: torch reports an opcode


@pytest.mark.parametrize("write", [
    lambda path, obj: torch.save(obj, path),
    lambda path, obj: torch.save(obj, path, _use_new_zipfile_serialization=False),
    _pickle_protocol_4,
], ids=["zip", "legacy", "raw-pickle"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch's note on the plain pickle
def test_pickled_code_is_refused_by_name_and_never_runs(tmp_path, source, write):
    _, state = source
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.pth"
    write(path, {"model": dict(state), "payload": SystemCall(marker)})
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    assert "posix.system" in message and "evil.pth" in message, message
    assert "weights_only=False" not in message and "trust" not in message, message
    assert not marker.exists()


# -- issue 13 item 8: every reading error names the file and the format tried -------------------------------------
def _truncated(tmp_path, source, suffix, save):
    _, state = source
    path = tmp_path / f"full{suffix}"
    save(path, state)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return cut


@pytest.mark.parametrize(("make", "fmt"), [
    (lambda tmp, src: (tmp / "empty.pth", (tmp / "empty.pth").write_bytes(b""))[0], "PyTorch checkpoint"),
    (lambda tmp, src: (tmp / "empty.safetensors", (tmp / "empty.safetensors").write_bytes(b""))[0], "safetensors"),
    (lambda tmp, src: _truncated(tmp, src, ".safetensors", lambda p, s: save_file(s, p)), "safetensors"),
    (lambda tmp, src: _truncated(tmp, src, ".pth", lambda p, s: torch.save(s, p)), "PyTorch checkpoint"),
    (lambda tmp, src: _truncated(tmp, src, ".pt", lambda p, s: torch.save(s, p, _use_new_zipfile_serialization=False)),
     "PyTorch checkpoint"),
], ids=["empty-pth", "empty-safetensors", "truncated-safetensors", "truncated-zip", "truncated-legacy"])
def test_unreadable_files_name_the_file_and_the_format(tmp_path, source, make, fmt):
    path = make(tmp_path, source)
    with pytest.raises(CheckpointError) as err:
        load(path)
    message = str(err.value)
    assert repr(str(path)) in message and fmt in message, message


def test_a_directory_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=rf"{tmp_path.name}'? is a directory, not a checkpoint file"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: '.*nope\.safetensors' \(a safetensors"):
        load(tmp_path / "nope.safetensors")
