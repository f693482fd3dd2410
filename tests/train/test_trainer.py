"""The training loop: resume == uninterrupted, label-free self-distillation, outputs, and clear errors."""

import json
import re

import pytest
import torch

from slimkern.analysis.datasets import DataError
from slimkern.cli import main
from slimkern.train import LossConfig, TrainConfig, Trainer, load_training_data
from slimkern.zoo.eurosat_vit import WEIGHTS

from .helpers import image_folder, tiny_checkpoint, tiny_model

CONFIG = TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, lr=1e-3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return tiny_checkpoint(root / "start.safetensors"), image_folder(root / "images")


def _trainer(files, out, config=CONFIG, **data_kwargs):
    weights, images = files
    model = tiny_model(weights)
    return Trainer(model, weights, load_training_data(model, images, **data_kwargs), config, out)


def test_resume_gives_the_weights_of_an_uninterrupted_run(files, tmp_path):
    whole = _trainer(files, tmp_path / "whole")
    whole.run(log=lambda _: None)

    first = _trainer(files, tmp_path / "split")
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    second = _trainer(files, tmp_path / "split")  # a new process would build everything afresh like this
    assert second.resume() and second.step == 2
    second.run(log=lambda _: None)

    assert whole.step == second.step == 4
    for (name, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(whole.step_fn.head.weight, second.step_fn.head.weight)
    start = tiny_model(files[0]).state_dict()
    assert not torch.equal(start["blocks.0.attn.qkv.weight"], whole.model.state_dict()["blocks.0.attn.qkv.weight"])


def test_resume_refuses_another_recipe(files, tmp_path):
    _trainer(files, tmp_path).save_checkpoint()
    other = _trainer(files, tmp_path, TrainConfig(steps=4, batch_size=4, warmup_steps=1, min_width=0.2))
    with pytest.raises(ValueError, match="another recipe.*min_width"):
        other.resume()


def test_outputs_load_and_record_the_recipe(files, tmp_path):
    trainer = _trainer(files, tmp_path, exclude=_exclude(tmp_path, ["class0/class0_1.png", "class1/class1_5.png"]))
    assert len(trainer.data) == 10 and trainer.data.excluded == 2
    assert "class0/class0_1.png" not in trainer.data.items
    trainer.run(log=lambda _: None)
    trained, results = trainer.write_outputs()
    info = json.loads(results.read_text())
    assert info["recipe"]["min_width"] == 0.1 and info["data"] == {
        "train_images": 10, "excluded_images": 2, "classes": ["class0", "class1"], "multilabel": False}
    assert info["steps"] == 4 and info["history"][-1]["step"] == 4 and {"1", "0.1"} <= set(info["final_losses"])
    x = torch.randn(2, 3, 16, 16)
    reloaded = tiny_model(trained)
    torch.testing.assert_close(reloaded.run(x), trainer.model.run(x), rtol=2e-2, atol=2e-2)  # fp16 file


def test_label_free_self_distillation(files, tmp_path):
    weights, images = files
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, loss=LossConfig(objective="self-distill"))
    trainer = _trainer(files, tmp_path, config, labelled=False)
    assert trainer.data.labels is None and trainer.step_fn.head is None
    record = trainer.train_step()
    assert record["losses"]["1"]["teacher"] < 1e-6  # the full width starts as its teacher
    assert set(record["losses"]["0.1"]) == {"embedding"}
    assert all(not p.requires_grad for p in trainer.step_fn.teacher.parameters())


def _exclude(tmp_path, names):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"held_out": names}))
    return path


def test_data_errors_are_clear(files, tmp_path):
    weights, images = files
    model = tiny_model(weights)
    with pytest.raises(DataError, match="data folder not found"):
        load_training_data(model, tmp_path / "nowhere")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes((images / "class0" / "class0_0.png").read_bytes())
    with pytest.raises(DataError, match="no class folders.*needs labels.*self-distill"):
        load_training_data(model, flat)
    assert load_training_data(model, flat, labelled=False).labels is None
    with pytest.raises(DataError, match="1 images of the exclude list .* are not in"):
        load_training_data(model, images, exclude=_exclude(tmp_path, ["class0/class0_0.png", "other/x.png"]))
    with pytest.raises(ValueError, match="supervised training needs labelled data"):
        Trainer(model, weights, load_training_data(model, flat, labelled=False), CONFIG, tmp_path / "o")


@pytest.mark.parametrize("args,message", [
    (["--data", "{tmp}/nowhere"], "data folder not found"),
    (["--min-width", "0"], r"must lie in \(0, 1\]"),
    (["--min-width", "1.5"], r"must lie in \(0, 1\]"),
    (["--objective", "self-distill", "--distill", "logits"], "self-distillation has no labels"),
])
def test_cli_errors(files, tmp_path, capsys, args, message):
    argv = ["train", "vit_tiny_eurosat", "--weights", str(WEIGHTS), "--data", str(files[1]), "--out", str(tmp_path)]
    assert main(argv + [a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimkern train: error:") and re.search(message, err), err


def test_cli_refuses_to_overwrite_a_run_without_resume(files, tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert main(["train", "vit_tiny_eurosat", "--weights", str(WEIGHTS), "--data", str(files[1]),
                 "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
