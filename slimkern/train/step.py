"""One sandwich step: the slimmed training forward, the per-width losses, and the optimizer set-up.

The training forward is the inference forward (:meth:`SlimModel.encode` on the ``torch`` backend: the
same prefix views of the stored weights, the same ``1/sqrt(d_k')`` softmax scale), with autograd on:
slicing a parameter gives a view whose gradient lands in the kept rows and columns of the full weight.
``model.run`` stays the no-grad inference path and is unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..model import SlimModel
from ..plan import check_mode, check_width
from .losses import cosine_distillation, kl_distillation, label_loss

OBJECTIVES = ("supervised", "self-distill")
DISTILL_TARGETS = ("embedding", "logits", "both")
PRECISIONS = ("fp32", "bf16")
TRAINING_BACKEND = "torch"


def training_forward(model: SlimModel, x: torch.Tensor, width: float, mode: str = "attn+ffn") -> torch.Tensor:
    """Pooled embedding ``[B, d]`` at ``width`` with autograd, same semantics as ``model.run``.

    Raises:
        NotImplementedError: the model's backend is not ``torch`` (the Triton and CUDA kernels have no
            backward pass); or the backend returned an output without autograd history.
    """
    backend = model.backend
    if backend.name != TRAINING_BACKEND:
        raise NotImplementedError(
            f"training needs the '{TRAINING_BACKEND}' backend: the '{backend.name}' kernels have no backward "
            f"pass; load the model with backend='{TRAINING_BACKEND}' (inference can use '{backend.name}' later)")
    out = model.encode(x, check_width(width), check_mode(mode), "pooled", backend)
    if torch.is_grad_enabled() and not out.requires_grad and any(p.requires_grad for p in model.parameters()):
        raise NotImplementedError(f"the '{backend.name}' backend returned an embedding without autograd history; "
                                  "it cannot be trained through")
    return out


@dataclass(frozen=True)
class LossConfig:
    """What each width learns (see :mod:`slimkern.train.losses`)."""

    #: "supervised": the full width learns the labels through the linear head; "self-distill": it learns
    #: the frozen original model's embedding (no labels needed).
    objective: str = "supervised"
    #: what the smaller widths imitate of the full width: "embedding" (cosine), "logits" (KL) or "both".
    distill: str = "embedding"
    temperature: float = 1.0
    label_smoothing: float = 0.1
    #: "bf16": forward passes under bfloat16 autocast (CPU with avx512_bf16 / AMX, or CUDA); weights stay fp32.
    precision: str = "fp32"
    mode: str = "attn+ffn"

    def __post_init__(self) -> None:
        for name, value, allowed in (("objective", self.objective, OBJECTIVES),
                                     ("distill", self.distill, DISTILL_TARGETS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
        check_mode(self.mode)
        if self.objective == "self-distill" and self.distill != "embedding":
            raise ValueError(f"self-distillation has no labels and so no head or logits: use distill='embedding', "
                             f"got {self.distill!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


class SandwichStep(nn.Module):
    """The model, its linear head (supervised) and the frozen teacher (self-distillation) of one training run.

    :meth:`width_losses` yields the loss of each width of a sandwich; the caller back-propagates each one
    (gradient accumulation, one width's graph in memory at a time) or their sum (one backward, as under
    Lightning); both give the same gradients.
    """

    def __init__(self, model: SlimModel, config: LossConfig, num_classes: int | None = None,
                 teacher: SlimModel | None = None) -> None:
        super().__init__()
        self.model, self.config = model, config
        if config.objective == "supervised":
            if not num_classes:
                raise ValueError("supervised training needs labelled data (num_classes >= 1)")
            # zero-initialised: the first steps train the head without pushing noise into the encoder
            self.head = nn.Linear(model.dim, num_classes, device=model.device, dtype=model.dtype)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:
            if teacher is None:
                raise ValueError("self-distillation needs the frozen original model as teacher")
            self.head = None
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(self.model.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def width_losses(self, x: torch.Tensor, labels: torch.Tensor | None, widths: list[float]
                     ) -> Iterator[tuple[float, torch.Tensor, dict[str, float]]]:
        """``(width, loss, parts)`` for each width of ``widths``, whose first entry must be 1.0 (the target).

        The full width learns the labels (or the teacher's embedding); every other width learns the full
        width's detached embedding and/or logits.
        """
        if not widths or widths[0] != 1.0:
            raise ValueError(f"a sandwich starts with the full width 1.0 (the distillation target), got {widths}")
        cfg, multilabel = self.config, labels is not None and labels.dim() == 2
        target_emb = target_logits = None
        for width in widths:
            with self._autocast():
                emb = training_forward(self.model, x, width, cfg.mode)
                logits = self.head(emb) if self.head is not None else None
            parts = {}
            if width == 1.0 and target_emb is None:
                if cfg.objective == "supervised":
                    if labels is None:
                        raise ValueError("supervised training needs labels for every batch")
                    parts["labels"] = label_loss(logits, labels, cfg.label_smoothing)
                else:
                    with torch.no_grad(), self._autocast():
                        teacher_emb = self.teacher.run(x, 1.0, mode=cfg.mode)
                    parts["teacher"] = cosine_distillation(emb, teacher_emb)
                target_emb, target_logits = emb.detach(), None if logits is None else logits.detach()
            else:
                if cfg.distill in ("embedding", "both"):
                    parts["embedding"] = cosine_distillation(emb, target_emb)
                if cfg.distill in ("logits", "both"):
                    parts["logits"] = kl_distillation(logits, target_logits, cfg.temperature, multilabel)
            loss = sum(parts.values())
            yield width, loss, {k: float(v.detach()) for k, v in parts.items()}


def parameter_groups(model: SlimModel, head: nn.Module | None, lr: float, head_lr: float, weight_decay: float
                     ) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not norms, biases, tokens or positions); the fresh head
    at its own learning rate. Parameters with ``requires_grad=False`` are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            plain = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token", "mask_token"))
            (no_decay if plain else decay).append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    if head is not None:
        groups += [{"params": [head.weight], "lr": head_lr, "weight_decay": weight_decay},
                   {"params": [head.bias], "lr": head_lr, "weight_decay": 0.0}]
    for group in groups:
        group["base_lr"] = group["lr"]
    return [g for g in groups if g["params"]]


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at ``step`` (0-based): linear warm-up over ``warmup`` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
