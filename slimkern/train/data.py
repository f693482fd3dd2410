"""Training images: read once with the sweep's readers, normalised, held in memory as float16.

- Labelled: a class-per-folder tree (``DIR/<class>/<image>``) or, with a label list, multi-label images
  (the formats of :mod:`slimkern.analysis.datasets`).
- Unlabelled (self-distillation): every image under ``DIR`` (class folders or not; labels are ignored).
- ``exclude``: images never to train on (a held-out set), as paths relative to ``DIR``: a JSON list, a
  JSON object with a ``held_out`` list (the split files of the shipped model) or one path per line.
  Every listed image must exist in ``DIR``, so a wrong folder cannot silently leak held-out images.

Pixels go through the same path as the width sweep's features (:func:`~slimkern.analysis.datasets.model_batches`:
band selection, input scale, resize to the model's size, ``model.normalize``), then float16.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..analysis.datasets import (
    IMAGE_SUFFIXES,
    DataError,
    ImageSet,
    class_folder_dataset,
    model_batches,
    multilabel_dataset,
    read_image,
)
from ..model import SlimModel

#: Refuse to cache more than this many bytes of training images (float16) in memory.
MAX_CACHE_BYTES = 8 << 30


@dataclass
class TrainData:
    """Normalised training images ``[N, C, S, S]`` (float16) with labels (``None`` when unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]
    items: list[str]
    excluded: int

    @property
    def multilabel(self) -> bool:
        return self.labels is not None and self.labels.dim() == 2

    def __len__(self) -> int:
        return len(self.images)


def unlabelled_dataset(root: str | Path) -> ImageSet:
    """Every image under ``root`` (recursively, sorted; hidden files and folders skipped), without labels."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (expected a folder of images, class folders allowed)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root} holds no images (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return ImageSet(name=root.resolve().name, classes=(), labels=np.zeros(len(files), dtype=np.int64),
                    items=[str(f) for f in files], read=lambda i: read_image(files[i]))


def read_exclude_list(path: str | Path) -> list[str]:
    """Relative image paths from a JSON list, a JSON ``{"held_out": [...]}`` or a text file (one per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"exclude list not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        obj = json.loads(text)
        names = obj.get("held_out") if isinstance(obj, dict) else obj
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: expected a JSON list of relative image paths or an object with a "
                            "'held_out' list of them")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_training_data(model: SlimModel, root: str | Path, *, labelled: bool = True,
                       labels_file: str | Path | None = None, exclude: str | Path | None = None,
                       bands: Sequence[int] | None = None, scale: float | None = None,
                       batch_size: int = 256) -> TrainData:
    """Read the training images of ``root`` for ``model`` (see the module doc).

    Raises:
        DataError: missing folder, no class folders or label list where labels are needed, unknown
            excluded images, nothing left to train on, too many images to hold in memory.
    """
    root = Path(root)
    if labels_file is not None:
        data = multilabel_dataset(root, labels_file)
    elif labelled:
        try:
            data = class_folder_dataset(root)
        except DataError as err:
            raise DataError(f"{err}. Supervised training needs labels: a class-per-folder tree, a label list "
                            "(--labels FILE), or label-free training (--objective self-distill)") from None
    else:
        data = unlabelled_dataset(root)
    relative = [Path(item).relative_to(root).as_posix() for item in data.items]
    keep = np.ones(len(data), dtype=bool)
    if exclude is not None:
        names = set(read_exclude_list(exclude))
        unknown = sorted(names - set(relative))
        if unknown:
            raise DataError(f"{len(unknown)} images of the exclude list {exclude} are not in {root} "
                            f"(e.g. {', '.join(unknown[:3])}); is it the folder the list was made for?")
        keep = np.array([r not in names for r in relative])
    indices = np.flatnonzero(keep)
    if len(indices) == 0:
        raise DataError(f"no training images left in {root} after excluding {len(data)}")
    size, bands_n = model.cfg.arch.img_size, len(model.cfg.bands)
    need = len(indices) * bands_n * size * size * 2
    if need > MAX_CACHE_BYTES:
        raise DataError(f"{len(indices)} images of {bands_n} x {size} x {size} need {need / 2**30:.1f} GiB in "
                        f"memory (limit {MAX_CACHE_BYTES / 2**30:.0f} GiB); train on fewer images")
    chunks = [x.to("cpu", torch.float16) for x in model_batches(data, model, batch_size, indices=indices.tolist(),
                                                                 bands=bands, scale=scale)]
    labels = None
    if labelled or labels_file is not None:
        labels = torch.from_numpy(np.asarray(data.labels)[indices]).long()
        if labels.dim() == 2:
            labels = labels.float()
    return TrainData(images=torch.cat(chunks), labels=labels, classes=data.classes,
                     items=[relative[i] for i in indices], excluded=int((~keep).sum()))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 90-degree rotation per image (the symmetries of a nadir image patch)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.view(-1, *(1,) * (images.dim() - 1)), images.flip(-1), images)
    turns = torch.randint(0, 4, (len(images),), generator=generator).tolist()
    return torch.stack([torch.rot90(img, k, dims=(-2, -1)) for img, k in zip(images, turns, strict=True)])


def batch_indices(num_images: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Image indices of ``step``: epochs of a seeded permutation (a pure function of seed and step), last
    partial batch dropped."""
    per_epoch = num_images // batch_size
    if per_epoch < 1:
        raise DataError(f"batch size {batch_size} is larger than the {num_images} training images")
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size]
