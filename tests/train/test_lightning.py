"""The LightningModule wrapper: one Trainer step equals one step of slimkern's own loop."""

import pytest
import torch

from slimkern.train import TrainConfig
from slimkern.train.step import SandwichStep, cosine_factor, parameter_groups
from slimkern.train.widths import sandwich_widths, step_generator

from .helpers import tiny_checkpoint, tiny_model

lightning = pytest.importorskip("lightning.pytorch")


def test_one_trainer_step_equals_the_plain_sandwich_step(tmp_path):
    from slimkern.train.lightning import SlimmableModule

    weights = tiny_checkpoint(tmp_path / "start.safetensors")
    config = TrainConfig(steps=10, warmup_steps=2, lr=1e-2, head_lr=1e-1, clip_grad_norm=0.5, seed=3)
    x, labels = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])

    module = SlimmableModule(tiny_model(weights), config, num_classes=3, weights=weights)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=6)
    trainer = lightning.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)

    model = tiny_model(weights)
    model.requires_grad_(True)
    step = SandwichStep(model, config.loss, num_classes=3)
    optimizer = torch.optim.AdamW(parameter_groups(model, step.head, config.lr * cosine_factor(0, 10, 2),
                                                   config.head_lr * cosine_factor(0, 10, 2), config.weight_decay))
    for _, loss, _ in step.width_losses(x, labels, sandwich_widths(step_generator(3, 0), 0.1, 2)):
        loss.backward()
    torch.nn.utils.clip_grad_norm_(list(step.parameters()), 0.5)
    optimizer.step()

    start = tiny_model(weights).state_dict()
    for (name, got), expected in zip(module.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert not torch.equal(got, start[name]), name
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.sandwich.head.weight, step.head.weight, rtol=1e-5, atol=1e-6)
