"""Small real images shipped with the package (licensed; see ``slimkern/data/*/README.md``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

DATA_DIR = Path(__file__).parent / "data"


def eurosat_sample(count: int | None = None, size: int = 224) -> tuple[torch.Tensor, list[str]]:
    """Real EuroSAT RGB patches scaled to [0, 1] and resized to ``size`` px (bicubic).

    Returns ``(images [B, 3, size, size] float32, class names)`` for ``count`` images (all 10 if None).
    """
    import numpy as np
    from PIL import Image

    files = sorted((DATA_DIR / "eurosat_sample").glob("*.jpg"))[:count]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # [B, H, W, 3] uint8
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return images.clamp_(0.0, 1.0), [f.stem.rsplit("_", 1)[0] for f in files]
