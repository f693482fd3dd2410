"""Losses of slimmable training.

- **Labels** (the full width, supervised): cross-entropy with label smoothing on the linear head's logits;
  multi-label data: binary cross-entropy per class.
- **Embedding distillation** (``cosine``): ``1 - cos(student, target)`` per image, averaged. The pooled
  embedding is what k-NN and linear probes read, and the k-NN probe ranks by cosine similarity, so the
  loss matches the quantity evaluated and ignores the scale, which the final LayerNorm fixes anyway.
- **Logit distillation** (``kl``): ``T^2 * KL(softmax(target / T) || softmax(student / T))`` (Hinton et
  al.), averaged over images; multi-label: the binary KL of each class's sigmoid, averaged over classes.

Every distillation loss detaches its target itself: gradients never flow into the output being imitated
(the full width's in-place target or the frozen original model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 outputs (autocast) in float32 for the loss; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def cosine_distillation(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between rows of ``student`` and the detached ``target`` ``[B, d]``."""
    return (1.0 - F.cosine_similarity(_wide(student), _wide(target.detach()), dim=-1)).mean()


def kl_distillation(student: torch.Tensor, target: torch.Tensor, temperature: float = 1.0,
                    multilabel: bool = False) -> torch.Tensor:
    """Temperature-scaled KL divergence from the detached ``target`` logits to the ``student`` logits."""
    t = temperature
    student, target = _wide(student) / t, _wide(target.detach()) / t
    if multilabel:
        p = torch.sigmoid(target)
        kl = (p * (F.logsigmoid(target) - F.logsigmoid(student))
              + (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-student)))
        return kl.mean() * t * t
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(target, -1), log_target=True, reduction="batchmean")
    return kl * t * t


def label_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for class indices ``[B]``, binary cross-entropy for 0/1 labels ``[B, C]``."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(_wide(logits), labels.to(_wide(logits).dtype))
    return F.cross_entropy(_wide(logits), labels, label_smoothing=label_smoothing)
