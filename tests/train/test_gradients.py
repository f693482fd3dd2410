"""The training forward has autograd with inference semantics: one sandwich step's gradients equal those of
materialised dense copies of the slimmed weights (float64), distillation targets are detached, and
backends without a backward pass are refused."""

import math

import pytest
import torch
import torch.nn.functional as F

import slimkern
from slimkern.reference import kept_head_dims
from slimkern.train import LossConfig, SandwichStep, cosine_distillation, kl_distillation, training_forward

from .helpers import tiny_model


def _official_grads(model, head) -> dict[str, torch.Tensor]:
    """Every parameter's gradient in the checkpoint's own layout (undoing the head-dim-major storage)."""
    grads = {}
    for name, p in model.named_parameters():
        grad = p.grad
        if name.startswith("blocks."):
            index, key = name.split(".", 2)[1:]
            for perm_key, _, to_official in model.blocks[int(index)]._permutations():
                if perm_key == key:
                    grad = to_official(grad)
        grads[name] = grad
    grads.update({f"head.{k}": v.grad for k, v in head.named_parameters()})
    return grads


def _dense_forward(state: dict, x: torch.Tensor, width: float, heads: int, eps: float):
    """An independent plain ViT on DENSE copies of the slimmed weights (new leaf tensors; explicit attention).

    Returns (pooled embedding, logits, {official name: (leaf, scatter into the full tensor)}).
    """
    leaves = {}

    def leaf(name, index=None):  # index: a function full -> the kept part
        full = state[name]
        part = (full if index is None else index(full)).detach().clone().requires_grad_(True)
        leaves[name] = (part, index)
        return part

    dim = state["cls_token"].shape[-1]
    head_dim, hidden = dim // heads, state["blocks.0.mlp.fc1.weight"].shape[0]
    kept, units = max(1, int(width * head_dim)), max(1, int(width * hidden))
    idx = kept_head_dims(heads, head_dim, kept)
    qkv_rows = torch.cat([c * heads * head_dim + idx for c in range(3)])
    p = state["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(x, leaf("patch_embed.proj.weight"), leaf("patch_embed.proj.bias"), stride=p).flatten(2).transpose(1, 2)
    t = torch.cat([leaf("cls_token").expand(len(x), -1, -1), t], 1) + leaf("pos_embed")

    def norm(h, name):
        return F.layer_norm(h, (dim,), leaf(f"{name}.weight"), leaf(f"{name}.bias"), eps)

    for b in range(sum(k.endswith("norm1.weight") for k in state)):
        pre = f"blocks.{b}."
        h = norm(t, pre + "norm1")
        rows = lambda w: w[qkv_rows]  # noqa: E731
        qkv = h @ leaf(pre + "attn.qkv.weight", rows).T + leaf(pre + "attn.qkv.bias", rows)
        q, k, v = (c.reshape(len(x), -1, heads, kept).transpose(1, 2) for c in qkv.chunk(3, -1))
        o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(kept), -1) @ v
        o = o.transpose(1, 2).reshape(len(x), -1, heads * kept)
        t = t + o @ leaf(pre + "attn.proj.weight", lambda w: w[:, idx]).T + leaf(pre + "attn.proj.bias")
        h = norm(t, pre + "norm2")
        first = lambda w: w[:units]  # noqa: E731
        h = F.gelu(h @ leaf(pre + "mlp.fc1.weight", first).T + leaf(pre + "mlp.fc1.bias", first))
        t = t + h @ leaf(pre + "mlp.fc2.weight", lambda w: w[:, :units]).T + leaf(pre + "mlp.fc2.bias")
    emb = norm(t, "norm")[:, 0]
    logits = emb @ leaf("head.weight").T + leaf("head.bias")
    return emb, logits, leaves


def _scatter(full: torch.Tensor, index, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` of the kept part of ``full`` placed into a zero tensor of ``full``'s shape."""
    out = torch.zeros_like(full, requires_grad=True)
    part = out if index is None else index(out)
    return torch.autograd.grad(part, out, grad_outputs=grad)[0]


@pytest.mark.parametrize("distill", ["embedding", "logits", "both"])
def test_sandwich_step_gradients_equal_dense_copies(distill):
    model = tiny_model(dtype=torch.float64)
    model.requires_grad_(True)
    step = SandwichStep(model, LossConfig(distill=distill, label_smoothing=0.1), num_classes=3)
    with torch.no_grad():  # a non-zero head, so the logits and their gradients are not trivial
        step.head.weight.normal_(0, 0.3)
        step.head.bias.normal_(0, 0.1)
    x = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    widths = [1.0, 0.1, 0.37, 0.8]  # d_k' = 7, 1, 2, 5 and d_h' = 84, 8, 31, 67

    for _, loss, _ in step.width_losses(x, labels, widths):
        loss.backward()
    got = _official_grads(model, step.head)

    state = {**model.state_dict(), **{f"head.{k}": v for k, v in step.head.state_dict().items()}}
    expected = {name: torch.zeros_like(v) for name, v in state.items()}
    heads, eps = model.blocks[0].spec.num_heads, model.norm_eps
    target_emb = target_logits = None
    for width in widths:
        emb, logits, leaves = _dense_forward(state, x, width, heads, eps)
        if width == 1.0:
            loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
            target_emb, target_logits = emb.detach(), logits.detach()
        else:
            loss = 0.0
            if distill in ("embedding", "both"):
                loss = loss + (1 - F.cosine_similarity(emb, target_emb, dim=-1)).mean()
            if distill in ("logits", "both"):
                loss = loss + F.kl_div(F.log_softmax(logits, -1), F.softmax(target_logits, -1), reduction="batchmean")
        loss.backward()
        for name, (part, index) in leaves.items():
            if part.grad is not None:  # the head gets none from embedding distillation
                expected[name] += _scatter(state[name], index, part.grad)

    assert set(got) == set(expected)
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name  # every parameter is trained
        err = ((got[name] - grad).norm() / grad.norm()).item()
        assert err < 1e-10, f"{name}: relative gradient error {err:.3g}"


def test_distillation_losses_detach_their_targets():
    student = torch.randn(4, 6, requires_grad=True)
    target = torch.randn(4, 6, requires_grad=True)
    for loss in (cosine_distillation(student, target), kl_distillation(student, target, 2.0),
                 kl_distillation(student, target, 1.0, multilabel=True)):
        loss.backward()
        assert target.grad is None and student.grad.abs().sum() > 0
        student.grad = None
    same = torch.randn(4, 6)
    assert cosine_distillation(same, 3 * same).abs() < 1e-6
    assert kl_distillation(same, same).abs() < 1e-6 and kl_distillation(same, same, multilabel=True).abs() < 1e-6


def test_smaller_widths_learn_the_detached_full_width_output():
    """A smaller width's loss sends no gradient through the full width's forward: its gradients equal those
    with the full width's outputs given as constants."""
    model = tiny_model(dtype=torch.float64)
    model.requires_grad_(True)
    step = SandwichStep(model, LossConfig(distill="both"), num_classes=2)
    with torch.no_grad():
        step.head.weight.normal_()
    x, labels = torch.randn(3, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 1])
    losses = step.width_losses(x, labels, [1.0, 0.25])
    next(losses)  # the full width: computed, not back-propagated
    _, small, _ = next(losses)
    small.backward()
    got = [p.grad.clone() for p in step.parameters() if p.requires_grad]

    step.zero_grad(set_to_none=True)
    with torch.no_grad():
        emb_full = training_forward(model, x, 1.0)
        logits_full = step.head(emb_full)
    emb = training_forward(model, x, 0.25)
    (cosine_distillation(emb, emb_full) + kl_distillation(step.head(emb), logits_full)).backward()
    for g, p in zip(got, [p for p in step.parameters() if p.requires_grad], strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-14)


def test_inference_path_is_unchanged_by_training_mode():
    model = tiny_model()
    x = torch.randn(2, 3, 16, 16)
    before = model.run(x, 0.3)
    model.requires_grad_(True)
    assert not model.run(x, 0.3).requires_grad  # run() stays a no-grad inference call
    emb = training_forward(model, x, 0.3)
    assert emb.requires_grad
    torch.testing.assert_close(emb.detach(), before, rtol=0, atol=0)


def test_backends_without_backward_are_refused(monkeypatch):
    model = tiny_model()
    model.requires_grad_(True)

    class NoBackward(type(model.backend)):
        name = "triton"

    monkeypatch.setattr(slimkern.model, "select_backend", lambda *args: NoBackward())
    model.backend_name = "triton"  # resolves the backend again (through the patched selection)
    with pytest.raises(NotImplementedError, match="no backward pass.*backend='torch'"):
        training_forward(model, torch.randn(1, 3, 16, 16), 0.5)
