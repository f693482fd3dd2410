"""Trained weights go back into the input file's own layout: container, keys, shapes, dtypes, other entries."""

import argparse
import warnings

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import slimkern
from slimkern.checkpoints import read_checkpoint
from slimkern.train.official import official_locations, write_official
from slimkern.train.trainer import prepare_model
from slimkern.zoo.vit import to_timm

from .helpers import tiny_checkpoint, tiny_model


def _perturb(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_unchanged_model_writes_the_same_file(tmp_path):
    source = tiny_checkpoint(tmp_path / "start.safetensors")
    out = write_official(tiny_model(source), source, tmp_path / "out.safetensors", metadata={"note": "x"})
    before, after = load_file(source), load_file(out)
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    with safe_open(str(out), framework="pt") as fh:
        assert fh.metadata() == {"model": "vit_tiny_eurosat", "note": "x"}


def test_trained_safetensors_load_in_slimkern_and_timm(tmp_path):
    source = tiny_checkpoint(tmp_path / "start.safetensors")
    model = tiny_model(source)
    _perturb(model)
    out = write_official(model, source, tmp_path / "trained.safetensors")
    expected = {k: v.half() for k, v in model.state_dict().items()}  # the input file is fp16
    written = load_file(out)
    assert set(written) == set(expected) and all(v.dtype == torch.float16 for v in written.values())
    for key, value in expected.items():
        assert torch.equal(written[key], value), key

    reloaded = tiny_model(out)
    x = torch.randn(2, 3, 16, 16)
    vit = to_timm(reloaded, state={k: v.float() for k, v in load_file(out).items()})  # timm's own strict load
    with torch.no_grad():
        torch.testing.assert_close(vit(x), reloaded.run(x), rtol=1e-5, atol=1e-5)
    assert not torch.equal(reloaded.run(x), tiny_model(source).run(x))


def test_mae_container_keeps_its_other_entries(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = slimkern.load("satmae", depth=2, dim=64, num_heads=2, backend="torch")
    encoder = {f"module.{k}": v for k, v in start.state_dict().items()}
    decoder = {"decoder_embed.weight": torch.randn(8, 64), "mask_token": torch.randn(1, 1, 64)}
    args = argparse.Namespace(lr=1e-3, model="mae_vit_large")
    torch.save({"model": {**encoder, **decoder}, "optimizer": {"state": {}, "lr": 0.1}, "epoch": 7, "args": args},
               tmp_path / "mae.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("satmae", weights=tmp_path / "mae.pth", depth=2, dim=64, num_heads=2)
    _perturb(model)
    write_official(model, tmp_path / "mae.pth", tmp_path / "trained.pth")

    written = read_checkpoint(tmp_path / "trained.pth")
    assert list(written) == ["model", "optimizer", "epoch", "args"]
    assert written["epoch"] == 7 and written["args"] == args and written["optimizer"] == {"state": {}, "lr": 0.1}
    assert list(written["model"]) == [*encoder, *decoder]
    for key, value in decoder.items():
        assert torch.equal(written["model"][key], value)
    for key, value in model.state_dict().items():
        assert torch.equal(written["model"][f"module.{key}"], value), key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = slimkern.load("satmae", weights=tmp_path / "trained.pth", depth=2, dim=64, num_heads=2)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(again.run(x), model.run(x), rtol=0, atol=0)


def test_parameters_the_file_lacks_stay_frozen(tmp_path):
    """SSL4EO files without a final norm load with an identity norm: it has no place in the file, so it is
    not trained (the written file then describes the trained model exactly)."""
    arch = {"depth": 1, "dim": 24, "num_heads": 2, "img_size": 32}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = slimkern.load("ssl4eo_vits16_mae", **arch).state_dict()
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("norm.")}}, tmp_path / "enc.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("ssl4eo_vits16_mae", weights=tmp_path / "enc.pth", backend="torch", **arch)
    _, missing = official_locations(model, read_checkpoint(tmp_path / "enc.pth"))
    assert missing == ["norm.weight", "norm.bias"]
    assert prepare_model(model, tmp_path / "enc.pth") == missing
    assert not model.norm.weight.requires_grad and model.blocks[0].attn.qkv.weight.requires_grad
