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
DISTILL_SOURCES = ("full", "original")
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
    #: whom the smaller widths imitate: "full" (in-place distillation: the full width's detached output of the
    #: same step, US-Nets) or "original" (the frozen original model's full-width embedding: a target that
    #: does not drift while the shared weights change; embedding only, the original has no head).
    distill_from: str = "full"
    #: supervised: weight of an extra full-width term ``1 - cos(full width, frozen original)`` that keeps the
    #: full width's embedding (what k-NN reads) near the starting checkpoint's; 0 = labels only.
    anchor: float = 0.0
    #: the full width's loss is multiplied by this, each smaller width's by 1: with n smaller widths, n gives
    #: the full width as much gradient as all of them together (it shares every weight they train).
    full_weight: float = 1.0
    temperature: float = 1.0
    label_smoothing: float = 0.1
    #: "bf16": forward passes under bfloat16 autocast (CPU with avx512_bf16 / AMX, or CUDA); weights stay fp32.
    precision: str = "fp32"
    mode: str = "attn+ffn"

    def __post_init__(self) -> None:
        for name, value, allowed in (("objective", self.objective, OBJECTIVES),
                                     ("distill", self.distill, DISTILL_TARGETS),
                                     ("distill_from", self.distill_from, DISTILL_SOURCES),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
        check_mode(self.mode)
        if self.objective == "self-distill" and self.distill != "embedding":
            raise ValueError(f"self-distillation has no labels and so no head or logits: use distill='embedding', "
                             f"got {self.distill!r}")
        if self.distill_from == "original" and self.distill != "embedding":
            raise ValueError(f"distilling from the original model needs distill='embedding' (the original has no "
                             f"classifier head, so no logits), got {self.distill!r}")
        if self.objective == "self-distill" and self.anchor:
            raise ValueError("anchor adds the original model's embedding to the labels of supervised training; "
                             "self-distillation already learns only that embedding: leave anchor at 0")
        for name in ("anchor", "full_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= (0 if name == "anchor" else 1e-12)):
                raise ValueError(f"{name} must be a finite number {'>= 0' if name == 'anchor' else '> 0'}, "
                                 f"got {value!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")

    @property
    def needs_teacher(self) -> bool:
        """Whether a loss reads the frozen original model."""
        return self.objective == "self-distill" or self.distill_from == "original" or self.anchor > 0


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
            self.head = None
        if config.needs_teacher and teacher is None:
            raise ValueError("self-distillation, anchor > 0 and distill_from='original' need the frozen original "
                             "model as teacher")
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

        The full width learns the labels (plus ``anchor`` x its distance to the teacher) or the teacher's
        embedding; every other width learns the full width's detached embedding and/or logits, or the
        teacher's embedding (``distill_from="original"``). ``parts`` are the unweighted loss terms; ``loss``
        is their weighted sum, times ``full_weight`` for the full width.
        """
        if not widths or widths[0] != 1.0:
            raise ValueError(f"a sandwich starts with the full width 1.0 (the distillation target), got {widths}")
        cfg, multilabel = self.config, labels is not None and labels.dim() == 2
        teacher_emb = target_emb = target_logits = None
        if cfg.needs_teacher:
            with torch.no_grad(), self._autocast():
                teacher_emb = self.teacher.run(x, 1.0, mode=cfg.mode)
        for width in widths:
            with self._autocast():
                emb = training_forward(self.model, x, width, cfg.mode)
                logits = self.head(emb) if self.head is not None else None
            parts, weights = {}, {}
            if width == 1.0 and target_emb is None:
                if cfg.objective == "supervised":
                    if labels is None:
                        raise ValueError("supervised training needs labels for every batch")
                    parts["labels"] = label_loss(logits, labels, cfg.label_smoothing)
                    if cfg.anchor:
                        parts["anchor"], weights["anchor"] = cosine_distillation(emb, teacher_emb), cfg.anchor
                else:
                    parts["teacher"] = cosine_distillation(emb, teacher_emb)
                target_emb, target_logits = emb.detach(), None if logits is None else logits.detach()
                scale = cfg.full_weight
            else:
                if cfg.distill in ("embedding", "both"):
                    source = teacher_emb if cfg.distill_from == "original" else target_emb
                    parts["embedding"] = cosine_distillation(emb, source)
                if cfg.distill in ("logits", "both"):
                    parts["logits"] = kl_distillation(logits, target_logits, cfg.temperature, multilabel)
                scale = 1.0
            loss = scale * sum(weights.get(name, 1.0) * part for name, part in parts.items())
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
