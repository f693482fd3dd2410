"""The sandwich step as a Lightning ``LightningModule``, for training under ``lightning.Trainer`` (TerraTorch
and most RS training code bases use Lightning). Needs the ``train`` extra (``pip install "slimkern[train]"``).

Batches are ``(images, labels)`` (supervised) or ``images`` (self-distillation), normalised for the model;
augmentation is the data loader's job. Every step sums the sandwich's per-width losses (one backward: the
same gradients as slimkern's accumulating loop) and clips the gradient norm to ``config.clip_grad_norm``;
the optimizer is AdamW with the linear warm-up + cosine schedule of ``config`` per step. Write the result
with :func:`slimkern.train.write_official`.

>>> module = SlimmableModule(model, TrainConfig(steps=300), num_classes=10, weights=W)   # doctest: +SKIP
>>> lightning.Trainer(max_steps=300).fit(module, loader)                                 # doctest: +SKIP
>>> write_official(module.model, W, "trained.safetensors")                               # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch

try:
    import lightning.pytorch as pl
except ImportError:
    raise ImportError('slimkern.train.lightning needs Lightning: pip install "slimkern[train]"') from None

from ..model import SlimModel
from .step import SandwichStep, cosine_factor, parameter_groups
from .trainer import TrainConfig, prepare_model
from .widths import sandwich_widths, step_generator


class SlimmableModule(pl.LightningModule):
    """Slimmable fine-tuning of ``model`` under Lightning (see the module doc).

    Args:
        model: loaded with ``backend="torch"``.
        config: the recipe (``steps`` and ``warmup_steps`` set the schedule; data-side fields are unused).
        num_classes: classes of the labels (supervised); ``None`` for self-distillation.
        teacher: the frozen original model (self-distillation).
        weights: the official checkpoint ``model`` came from: only parameters it holds are trained, so the
            result can be written back in its layout (``None``: train every parameter).
    """

    def __init__(self, model: SlimModel, config: TrainConfig, num_classes: int | None = None,
                 teacher: SlimModel | None = None, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        if weights is not None:
            prepare_model(model, weights)
        else:
            model.requires_grad_(True)
        self.config = config
        self.sandwich = SandwichStep(model, config.loss, num_classes=num_classes, teacher=teacher)
        self.train()  # slimkern models have no train/eval difference; this only keeps Lightning from warning

    @property
    def model(self) -> SlimModel:
        return self.sandwich.model

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, labels = batch if isinstance(batch, (list, tuple)) else (batch, None)
        cfg = self.config
        widths = sandwich_widths(step_generator(cfg.seed, self.global_step), cfg.min_width, cfg.num_random)
        total = 0.0
        for width, loss, _ in self.sandwich.width_losses(x, labels, widths):
            total = total + loss
            name = "full" if width == 1.0 else "min" if width == cfg.min_width else "random"
            self.log(f"loss/{name}", loss.detach(), on_step=True, reduce_fx="mean")
        self.log("loss", total.detach(), prog_bar=True)
        return total

    def configure_optimizers(self):
        cfg = self.config
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.sandwich.head, cfg.lr, cfg.head_lr,
                                                       cfg.weight_decay), lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, cfg.steps, cfg.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val or self.config.clip_grad_norm,
                            gradient_clip_algorithm=gradient_clip_algorithm or "norm")
