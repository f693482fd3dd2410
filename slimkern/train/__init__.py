"""Learned slimmable training: fine-tune a zoo model so that every width is good, with one set of weights.

Each step follows the sandwich rule (full width, the smallest width, random widths in between;
:mod:`~slimkern.train.widths`) with in-place distillation (smaller widths learn the full width's detached
embedding and/or logits; :mod:`~slimkern.train.losses`); the full width learns the labels through a
linear head, or the frozen original model (label-free). The slimmed forward is the inference forward of
the ``torch`` backend with autograd (:func:`~slimkern.train.step.training_forward`). The result is written
in the model's official checkpoint layout (:mod:`~slimkern.train.official`). ``slimkern train`` is the
command line; :mod:`slimkern.train.lightning` wraps the step for Lightning (the ``train`` extra).

>>> model = slimkern.load("vit_tiny_eurosat", weights=W, backend="torch")          # doctest: +SKIP
>>> data = load_training_data(model, "eurosat_rgb", exclude="split.json")          # doctest: +SKIP
>>> trainer = Trainer(model, W, data, TrainConfig(steps=300), "runs/train")         # doctest: +SKIP
>>> trainer.run(); trainer.write_outputs()                                          # doctest: +SKIP
"""

from .data import TrainData, load_training_data
from .losses import cosine_distillation, kl_distillation
from .official import write_official
from .step import LossConfig, SandwichStep, training_forward
from .trainer import TrainConfig, Trainer
from .widths import sandwich_widths

__all__ = ["LossConfig", "SandwichStep", "TrainConfig", "TrainData", "Trainer", "cosine_distillation",
           "kl_distillation", "load_training_data", "sandwich_widths", "training_forward", "write_official"]
