"""The training loop: sandwich steps with AdamW and a cosine schedule, checkpoints with resume, and the
output in the official checkpoint layout plus a JSON of the recipe and results.

Deterministic on the CPU: every random choice of step ``t`` (data order, augmentation, widths) is a
function of ``(seed, t)`` and the learning rate a function of ``t``, and a training checkpoint holds the
weights, the head and the optimizer state; so a run resumed from a checkpoint ends with the same weights
as an uninterrupted one (same machine, threads and library versions).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import slimkern

from ..analysis.results import write_json
from ..checkpoints import read_checkpoint
from ..model import SlimModel
from .data import TrainData, augment, batch_indices
from .official import official_locations, write_official
from .step import TRAINING_BACKEND, LossConfig, SandwichStep, cosine_factor, parameter_groups
from .widths import check_min_width, check_num_random, sandwich_widths, step_generator

CHECKPOINT = "last.pt"
RESULTS = "train.json"


@dataclass(frozen=True)
class TrainConfig:
    """The recipe (every field is recorded in ``train.json``; a resumed run must use the same one)."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    min_width: float = 0.1
    num_random: int = 2
    clip_grad_norm: float = 1.0
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    loss: LossConfig = LossConfig()

    def __post_init__(self) -> None:
        check_min_width(self.min_width)
        check_num_random(self.num_random)
        for name in ("steps", "batch_size", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        for name in ("lr", "head_lr", "clip_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def prepare_model(model: SlimModel, weights: str | os.PathLike) -> list[str]:
    """Make the parameters that the official file holds trainable; return those it does not (kept frozen).

    Raises:
        ValueError: the model's backend cannot be trained through, or a block weight has no place in the file.
    """
    if model.backend_name != TRAINING_BACKEND:
        raise NotImplementedError(f"training needs backend='{TRAINING_BACKEND}' (the Triton and CUDA kernels have "
                                  f"no backward pass); the model was loaded with backend='{model.backend_name}'")
    locations, missing = official_locations(model, read_checkpoint(weights))
    blocks = [name for name in missing if name.startswith("blocks.")]
    if blocks:
        raise ValueError(f"{model.cfg.name}: the checkpoint's conversion does not map block weights one to one "
                         f"({', '.join(blocks[:4])}), so trained weights could not be written back in its layout")
    model.requires_grad_(False)
    for name, p in model.named_parameters():
        p.requires_grad_(name in locations)
    return missing


class Trainer:
    """Slimmable training of ``model`` (loaded from ``weights``) on ``data``; see :func:`train`."""

    def __init__(self, model: SlimModel, weights: str | os.PathLike, data: TrainData, config: TrainConfig,
                 out: str | os.PathLike) -> None:
        self.model, self.weights, self.data, self.config = model, Path(weights), data, config
        self.out = Path(out)
        if config.loss.objective == "supervised" and data.labels is None:
            raise ValueError("supervised training needs labelled data; pass labelled images or use "
                             "objective 'self-distill'")
        self.frozen = prepare_model(model, weights)
        teacher = None
        if config.loss.objective == "self-distill":
            teacher = slimkern.load(model.cfg.name, weights=weights, device=model.device, dtype=model.dtype,
                                    backend=TRAINING_BACKEND, **_arch_overrides(model))
        num_classes = len(data.classes) if data.labels is not None else None
        self.step_fn = SandwichStep(model, config.loss, num_classes=num_classes, teacher=teacher)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, self.step_fn.head, config.lr, config.head_lr, config.weight_decay),
            lr=config.lr)
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0

    # -- one step -------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Generator]:
        cfg, device = self.config, self.model.device
        generator = step_generator(cfg.seed, step)
        idx = batch_indices(len(self.data), cfg.batch_size, cfg.seed, step)
        x = self.data.images[idx]
        if cfg.augment:
            x = augment(x, generator)
        labels = None if self.data.labels is None else self.data.labels[idx].to(device)
        return x.to(device, self.model.dtype), labels, generator

    def accumulate(self, x: torch.Tensor, labels: torch.Tensor | None, widths: list[float]) -> dict:
        """Back-propagate every width's loss into ``.grad`` (not zeroed first); returns the loss parts."""
        record = {}
        for width, loss, parts in self.step_fn.width_losses(x, labels, widths):
            loss.backward()
            record[f"{width:.4g}"] = parts
        return record

    def train_step(self) -> dict:
        cfg = self.config
        x, labels, generator = self.batch(self.step)
        widths = sandwich_widths(generator, cfg.min_width, cfg.num_random)
        factor = cosine_factor(self.step, cfg.steps, cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.accumulate(x, labels, widths)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        self.optimizer.step()
        self.step += 1
        return {"step": self.step, "lr_factor": factor, "grad_norm": float(grad_norm), "losses": losses}

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.out / "checkpoints" / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        head = self.step_fn.head
        state = {"step": self.step, "config": json.dumps(self.config.as_dict()),
                 "model": self.model.state_dict(), "head": None if head is None else head.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "history": json.dumps(self.history),
                 "seconds": self.seconds}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def resume(self) -> bool:
        """Continue from ``out/checkpoints/last.pt`` if there is one (its recipe must equal this one)."""
        path = self.out / "checkpoints" / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["config"])
        if saved != json.loads(json.dumps(self.config.as_dict())):
            diff = sorted(k for k in saved if saved[k] != self.config.as_dict().get(k))
            raise ValueError(f"{path} was written by another recipe (differs in: {', '.join(diff)}); use another "
                             "output folder or the same options")
        with torch.no_grad():
            self.model.load_state_dict(state["model"], strict=True)
        if self.step_fn.head is not None:
            self.step_fn.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.seconds = int(state["step"]), json.loads(state["history"]), state["seconds"]
        return True

    # -- the run ----------------------------------------------------------------------------------------
    def run(self, log: Callable[[str], None] = print, log_every: int = 10) -> None:
        """Train until ``config.steps``, saving a checkpoint every ``checkpoint_every`` steps and at the end."""
        cfg = self.config
        started, window = time.perf_counter(), []
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            record = self.train_step()
            window.append(time.perf_counter() - t0)
            if self.step % log_every == 0 or self.step == cfg.steps:
                record["seconds_per_step"] = sum(window) / len(window)
                record["load_average"] = os.getloadavg()[0]
                self.history.append(record)
                window = []
                left = (cfg.steps - self.step) * record["seconds_per_step"]
                summary = ", ".join(f"{w}: " + "+".join(f"{v:.4f}" for v in parts.values())
                                    for w, parts in record["losses"].items())
                log(f"step {self.step}/{cfg.steps}: {summary} (lr x{record['lr_factor']:.3f}, "
                    f"{record['seconds_per_step']:.1f} s/step, load {record['load_average']:.1f}, ~{left / 60:.0f} "
                    "min left)")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.seconds += time.perf_counter() - started
                started = time.perf_counter()
                self.save_checkpoint()

    def write_outputs(self, extra: dict | None = None) -> tuple[Path, Path]:
        """The trained encoder in the official layout (beside ``train.json`` with the recipe and results)."""
        suffix = "".join(self.weights.suffixes[-1:]) or ".pth"
        trained = self.out / f"{self.weights.name.removesuffix(suffix)}_slimmable{suffix}"
        write_official(self.model, self.weights, trained,
                       metadata={"slimkern_train": json.dumps({"model": self.model.cfg.name,
                                                               "recipe": self.config.as_dict()})})
        last = self.history[-1] if self.history else {}
        results = {
            "model": self.model.cfg.name, "weights": str(self.weights), "trained_weights": trained.name,
            "recipe": self.config.as_dict(),
            "data": {"train_images": len(self.data), "excluded_images": self.data.excluded,
                     "classes": list(self.data.classes), "multilabel": self.data.multilabel},
            "frozen_parameters": self.frozen,
            "steps": self.step, "train_seconds": round(self.seconds, 1),
            "final_losses": last.get("losses"), "history": self.history,
            "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__},
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(extra or {}),
        }
        write_json(self.out / RESULTS, results)
        return trained, self.out / RESULTS


def _arch_overrides(model: SlimModel) -> dict:
    """The architecture fields in which ``model`` differs from its registered cfg (e.g. ``depth=2`` in tests)."""
    registered = slimkern.registry.get_cfg(model.cfg.name).arch
    return {f.name: getattr(model.cfg.arch, f.name) for f in dataclasses.fields(model.cfg.arch)
            if getattr(model.cfg.arch, f.name) != getattr(registered, f.name)}
