"""Tiny trainable models, their official checkpoint files and small synthetic image folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import slimkern

NAME = "vit_tiny_eurosat"
# head dim 7 (d_k' = 1 at width 0.1, 2 at 0.37), FFN 56, 16 px input: 4 patch tokens + class token
TINY = {"depth": 2, "dim": 21, "num_heads": 3, "img_size": 16}


def tiny_model(weights=None, **kwargs) -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load(NAME, weights=weights, backend="torch", **{**TINY, **kwargs})


def tiny_checkpoint(path: Path, dtype: torch.dtype = torch.float16) -> Path:
    """A random tiny model saved as the shipped model's official file: flat timm keys, safetensors."""
    state = {k: v.to(dtype).contiguous() for k, v in tiny_model().state_dict().items()}
    save_file(state, str(path), metadata={"model": NAME})
    return path


def image_folder(root: Path, classes: int = 2, per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    """``root/<class>/<class>_<i>.png`` with random 8-bit RGB pixels (each class its own mean colour)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 200, (size, size, 3)) + 50 * c
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"class{c}_{i}.png")
    return root
