"""Loss options of the sandwich step: the full width's anchor to the frozen original model, its weight, and
smaller widths distilled from the original instead of the moving full width (detached targets, clear errors)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from slimkern.train import LossConfig, SandwichStep, training_forward

from .helpers import tiny_model


def _student_and_teacher():
    teacher = tiny_model(dtype=torch.float64)
    model = copy.deepcopy(teacher)
    model.requires_grad_(True)
    with torch.no_grad():  # the student has moved away from the original, so the anchor is not zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, teacher


def _grads_of(step: SandwichStep, loss: torch.Tensor) -> list[torch.Tensor]:
    """Every trainable parameter's gradient of ``loss`` (zeros where none flows, e.g. the head)."""
    step.zero_grad(set_to_none=True)
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in step.parameters() if p.requires_grad]


def test_anchor_full_weight_and_original_targets_equal_their_formulas():
    model, teacher = _student_and_teacher()
    config = LossConfig(distill="embedding", distill_from="original", anchor=0.5, full_weight=3.0,
                        label_smoothing=0.0)
    step = SandwichStep(model, config, num_classes=3, teacher=teacher)
    with torch.no_grad():
        step.head.weight.normal_(0, 0.3)
    x, labels = torch.randn(4, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    (w_full, full, full_parts), (w_small, small, small_parts) = step.width_losses(x, labels, [1.0, 0.25])
    assert (w_full, w_small) == (1.0, 0.25) and set(full_parts) == {"labels", "anchor"}
    assert set(small_parts) == {"embedding"}
    got_full, got_small = _grads_of(step, full), _grads_of(step, small)
    assert all(p.grad is None for p in teacher.parameters())  # the frozen original gets no gradient

    target = teacher.run(x, 1.0).detach()  # a constant: the original model's full-width embedding
    emb = training_forward(model, x, 1.0)
    expected = 3.0 * (F.cross_entropy(step.head(emb), labels) + 0.5 * (1 - F.cosine_similarity(emb, target)).mean())
    torch.testing.assert_close(full.detach(), expected.detach(), rtol=1e-12, atol=0)
    assert full_parts["anchor"] > 1e-4  # the perturbed student is away from its anchor
    for g, e in zip(got_full, _grads_of(step, expected), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-14)

    expected = (1 - F.cosine_similarity(training_forward(model, x, 0.25), target)).mean()
    for g, e in zip(got_small, _grads_of(step, expected), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-14)


def test_in_place_distillation_stays_the_default():
    """Without the new options the losses are unchanged: the full width learns the labels only (weight 1) and
    smaller widths learn the full width's output (not the original's, which is not even loaded)."""
    config = LossConfig()
    assert (config.distill_from, config.anchor, config.full_weight, config.needs_teacher) == ("full", 0.0, 1.0, False)
    assert LossConfig(anchor=0.1).needs_teacher and LossConfig(distill_from="original").needs_teacher


@pytest.mark.parametrize("kwargs,message", [
    ({"distill_from": "original", "distill": "both"}, "distilling from the original model needs distill='embedding'"),
    ({"distill_from": "teacher"}, "unknown distill_from 'teacher'"),
    ({"objective": "self-distill", "anchor": 1.0}, "self-distillation already learns only that embedding"),
    ({"anchor": -1.0}, "anchor must be a finite number >= 0"),
    ({"anchor": float("nan")}, "anchor must be a finite number >= 0"),
    ({"full_weight": 0.0}, "full_weight must be a finite number > 0"),
    ({"full_weight": True}, "full_weight must be a finite number > 0"),
])
def test_bad_loss_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


def test_options_that_read_the_original_need_it():
    with pytest.raises(ValueError, match="need the frozen original model as teacher"):
        SandwichStep(tiny_model(), LossConfig(anchor=1.0), num_classes=2)
