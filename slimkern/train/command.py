"""``slimkern train NAME --weights W --data DIR ...`` (slimmable fine-tuning; see :mod:`slimkern.train`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from ..plan import MODES
from .step import DISTILL_TARGETS, OBJECTIVES, PRECISIONS, TRAINING_BACKEND, LossConfig
from .trainer import CHECKPOINT, TrainConfig

_DEFAULTS = TrainConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import parse_bands

    p.add_argument("name", help="registered model (see `slimkern list`)")
    p.add_argument("--weights", required=True, help="the official checkpoint to start from (the output has its layout)")
    p.add_argument("--data", required=True, help="training images: class-per-folder tree (or any image folder with "
                   "--objective self-distill)")
    p.add_argument("--labels", default=None, help="multi-label list (JSON or CSV file,labels) for the images in --data")
    p.add_argument("--exclude", default=None, help="images never to train on (held out): JSON list, JSON with a "
                   "'held_out' list (e.g. slimkern/data/weights/vit_tiny_eurosat_split.json) or one path per line")
    p.add_argument("--out", required=True, help="output folder: trained weights, train.json, checkpoints/")
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/checkpoints/{CHECKPOINT}")
    p.add_argument("--objective", choices=OBJECTIVES, default="supervised",
                   help="full width learns the labels, or the frozen original model's embedding (label-free)")
    p.add_argument("--distill", choices=DISTILL_TARGETS, default="embedding",
                   help="what smaller widths learn of the full width: embedding (cosine), logits (KL) or both")
    p.add_argument("--temperature", type=float, default=1.0, help="KL temperature of logit distillation")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--min-width", type=float, default=_DEFAULTS.min_width, help="smallest width trained every step")
    p.add_argument("--num-random", type=int, default=_DEFAULTS.num_random, help="random widths per step")
    p.add_argument("--mode", choices=MODES, default="attn+ffn")
    p.add_argument("--steps", type=int, default=_DEFAULTS.steps)
    p.add_argument("--batch", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="AdamW learning rate of the encoder")
    p.add_argument("--head-lr", type=float, default=_DEFAULTS.head_lr, help="of the new linear head")
    p.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay)
    p.add_argument("--warmup", type=int, default=_DEFAULTS.warmup_steps, help="linear warm-up steps, then cosine")
    p.add_argument("--clip", type=float, default=_DEFAULTS.clip_grad_norm, help="gradient-norm clipping")
    p.add_argument("--no-augment", action="store_true", help="no random flips and 90-degree rotations")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: autocast forward passes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bands", type=parse_bands, default=None, help="0-based band indices to take, e.g. 3,2,1")
    p.add_argument("--scale", type=float, default=None, help="factor from stored values to the model's input scale")


def run(args: argparse.Namespace) -> int:
    import slimkern

    from .data import load_training_data
    from .trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    loss = LossConfig(objective=args.objective, distill=args.distill, temperature=args.temperature,
                      label_smoothing=args.label_smoothing, precision=args.precision, mode=args.mode)
    config = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, head_lr=args.head_lr,
                         weight_decay=args.weight_decay, warmup_steps=args.warmup, min_width=args.min_width,
                         num_random=args.num_random, clip_grad_norm=args.clip, augment=not args.no_augment,
                         seed=args.seed, checkpoint_every=args.checkpoint_every, loss=loss)
    out = Path(args.out)
    if (out / "checkpoints" / CHECKPOINT).is_file() and not args.resume:
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it or use another --out")
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    model = slimkern.load(args.name, weights=args.weights, device=args.device, backend=TRAINING_BACKEND)
    data = load_training_data(model, args.data, labelled=args.objective == "supervised" or args.labels is not None,
                              labels_file=args.labels, exclude=args.exclude, bands=args.bands, scale=args.scale)
    read_seconds = time.perf_counter() - started
    trainer = Trainer(model, args.weights, data, config, out)
    resumed = trainer.resume()
    labels = f", {len(data.classes)} classes" if data.labels is not None else ""
    widths = ("full width only" if config.min_width == 1.0
              else f"sandwich [1, {config.min_width:g}, {config.num_random} random]")
    print(f"train: {model.cfg.name} from {args.weights} on {len(data)} images of {args.data} ({data.excluded} "
          f"excluded{labels}), {args.objective}, {widths}, {config.steps} steps of {config.batch_size}, "
          f"{torch.get_num_threads()} threads" + (f"; resumed at step {trainer.step}" if resumed else ""), flush=True)
    trainer.run(log=lambda line: print(line, flush=True))
    trained, results = trainer.write_outputs(extra={
        "command": shlex.join(["slimkern", *sys.argv[1:]]),
        "data_seconds": round(read_seconds, 1), "resumed": resumed})
    print(json.dumps({"trained_weights": str(trained), "results": str(results),
                      "train_seconds": round(trainer.seconds, 1)}))
    return 0
