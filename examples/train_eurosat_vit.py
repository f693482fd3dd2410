"""Train the sweep demo's model: a small ViT (``vit_tiny_eurosat``) on EuroSAT RGB, on the CPU.

    nice -n 5 python examples/train_eurosat_vit.py --data eurosat_rgb --epochs 6

(the command of the shipped weights: 17 minutes measured on a busy shared 2-core machine; on 2 idle cores
about 1.5 s per step, 32 steps per epoch, i.e. about 5 minutes projected).

Deterministic (fixed split, seeds, data order and augmentation; ``torch.use_deterministic_algorithms``;
two threads): the same command gives the same weights on the same machine and library versions.

- Split: per class, files sorted by their number (``Forest_1.jpg, Forest_2.jpg, ...``) and shuffled
  with ``numpy.random.default_rng(seed)``; the first 20 % are held out, the rest train. The held-out
  names are written next to the weights (``vit_tiny_eurosat_split.json``).
- Model: timm ``VisionTransformer`` with the registered architecture (64 px, patch 8, dim 192,
  depth 6, 3 heads, FFN 768, class-token pooling) and a 10-class linear head.
- Training: random flips and 90-degree rotations, AdamW (lr 1e-3, weight decay 0.05, batch 128),
  one warm-up epoch then a cosine schedule, label smoothing 0.1, stochastic depth 0.1. The held-out
  accuracy is printed after each epoch for monitoring only; the last epoch is kept (no selection).
- Output: the encoder (classifier head dropped, timm key names) as fp16 safetensors, checked to load
  through ``slimkern.load("vit_tiny_eurosat", weights=...)`` and to match timm's output; the held-out
  accuracy of the classifier head with the fp16-rounded weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import slimkern
from slimkern.registry import get_cfg
from slimkern.zoo.eurosat_vit import WEIGHTS

NAME = "vit_tiny_eurosat"
HELD_OUT_FRACTION = 0.2


def split_files(root: Path, seed: int) -> tuple[list[Path], list[Path], list[str]]:
    """``(train files, held-out files, class names)``: per class, sorted by number, shuffled, 20 % held out."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    train, held_out = [], []
    rng = np.random.default_rng(seed)
    for name in classes:
        files = sorted((root / name).glob("*.jpg"), key=lambda f: int(f.stem.rsplit("_", 1)[1]))
        order = rng.permutation(len(files))
        cut = round(HELD_OUT_FRACTION * len(files))
        held_out += [files[i] for i in sorted(order[:cut])]
        train += [files[i] for i in sorted(order[cut:])]
    return train, held_out, classes


def read_images(files: list[Path], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images [N, 3, 64, 64], labels [N])`` from class-folder files."""
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


def build_vit(num_classes: int, drop_path: float = 0.0) -> VisionTransformer:
    arch = get_cfg(NAME).arch
    return VisionTransformer(
        img_size=arch.img_size, patch_size=arch.patch_size, in_chans=arch.in_chans, embed_dim=arch.dim,
        depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=arch.norm_eps), num_classes=num_classes, global_pool="token",
        drop_path_rate=drop_path)


def normalize(images: torch.Tensor) -> torch.Tensor:
    cfg = get_cfg(NAME)
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random 90-degree rotation per image (the dihedral symmetries of a patch)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    turns = torch.randint(0, 4, (len(images),), generator=generator)
    return torch.stack([torch.rot90(img, int(k), dims=(-2, -1)) for img, k in zip(images, turns, strict=True)])


@torch.no_grad()
def accuracy(vit: VisionTransformer, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    vit.eval()
    pred = torch.cat([vit(normalize(images[i:i + batch])).argmax(1) for i in range(0, len(images), batch)])
    return (pred == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="EuroSAT RGB class-folder tree (<Class>/<Class>_<n>.jpg), e.g. the 5,000-image subset")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="output .safetensors (encoder, fp16)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="split, initialisation, data order, augmentation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (timing runs)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    train_files, held_files, classes = split_files(args.data, args.seed)
    x_train, y_train = read_images(train_files, classes)
    x_held, y_held = read_images(held_files, classes)
    print(f"{len(train_files)} train / {len(held_files)} held-out images, {len(classes)} classes", flush=True)

    vit = build_vit(len(classes), drop_path=0.1)
    decay = [p for n, p in vit.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in vit.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    steps_per_epoch = math.ceil(len(x_train) / args.batch)
    total = args.epochs * steps_per_epoch
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: (step + 1) / warmup if step < warmup else
        0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    generator = torch.Generator().manual_seed(args.seed)

    step = 0
    for epoch in range(args.epochs):
        vit.train()
        order = torch.randperm(len(x_train), generator=generator)
        epoch_start, loss_sum = time.perf_counter(), 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            logits = vit(normalize(augment(x_train[idx], generator)))
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            step += 1
            if args.max_steps and step >= args.max_steps:
                print(f"{step} steps in {time.perf_counter() - epoch_start:.1f} s "
                      f"({(time.perf_counter() - epoch_start) / step:.2f} s/step, {steps_per_epoch} steps/epoch)")
                return
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / len(x_train):.4f}, held-out acc "
              f"{accuracy(vit, x_held, y_held):.4f}, {time.perf_counter() - epoch_start:.0f} s "
              f"(total {time.perf_counter() - start:.0f} s)", flush=True)

    # Round to fp16 (the shipped precision) before the final numbers, so they describe the shipped file.
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(p.half().float())
    head_acc = accuracy(vit, x_held, y_held)
    encoder = {k: v.half().contiguous() for k, v in vit.state_dict().items() if not k.startswith("head.")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(encoder, str(args.out), metadata={"model": NAME, "seed": str(args.seed), "epochs": str(args.epochs)})
    split = args.out.with_name(f"{NAME}_split.json")
    split.write_text(json.dumps({"seed": args.seed, "held_out_fraction": HELD_OUT_FRACTION,
                                 "held_out": [f"{f.parent.name}/{f.name}" for f in held_files]}, indent=0) + "\n")

    # The shipped file must load through slimkern's normal path and give timm's pooled embedding.
    model = slimkern.load(NAME, weights=args.out)
    x = normalize(x_held[:16])
    with torch.no_grad():
        ref = vit.forward_head(vit.forward_features(x), pre_logits=True)
    err = ((model.run(x) - ref).norm() / ref.norm()).item()
    if err > 1e-4:
        raise RuntimeError(f"slimkern's embedding differs from timm's by {err:.2g} (relative)")
    print(json.dumps({"held_out_accuracy_head_fp16": round(head_acc, 4), "epochs": args.epochs,
                      "train_seconds": round(time.perf_counter() - start), "threads": args.threads,
                      "slimkern_vs_timm_rel_error": err, "weights": str(args.out), "split": str(split)}))


if __name__ == "__main__":
    main()
