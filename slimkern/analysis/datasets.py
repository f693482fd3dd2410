"""Labelled image sets for the width sweep: class-folder trees, multi-label lists, GEO-Bench.

Every reader gives an :class:`ImageSet`: a list of images (read lazily, one at a time) with labels and, where
known, the names of the stored bands. :func:`model_batches` turns it into the model's input through
:meth:`~slimkern.SlimModel.prepare`, so the model's input contract (``model.spec``) applies:

- **Pixels as stored.** JPEG/PNG are read with PIL as RGB (8-bit; RGBA, grayscale and palette images are
  converted, 16/32-bit ones refused as they would clip at 255); GeoTIFFs with tifffile, every band. The
  band axis is the file's samples axis where it has one (GDAL/rasterio GeoTIFFs, pixel- or
  band-interleaved, so a 12-band 10 x 10 tile reads right), else the smallest axis.
- **Band names.** JPEG/PNG bands are ``R, G, B``; GeoTIFF bands are named by ``band_names`` (the file's bands in
  order, e.g. ``B01, ..., B12``; CLI ``--band-names``), and then selected, reordered and checked by name. Without
  names, ``bands`` (0-based indices into the file's bands, e.g. ``[3, 2, 1]`` for R, G, B of a 13-band
  Sentinel-2 GeoTIFF) selects and orders them into the model's order (``model.spec.bands``); the result must
  have as many bands as the model takes, else a :class:`DataError` says both.
- **Units.** ``units`` says what the stored values are (``DN`` by default: 8-bit pixels, Sentinel-2 reflectance x
  10000; or ``reflectance``, ``dB``, ``linear``); ``prepare`` scales and normalises them as the model's spec says.
- **Size.** Images are resized to the model's input size ``cfg.arch.img_size`` (square) with bicubic
  interpolation and antialiasing when they differ.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model import SlimModel
from ..prepare import Prepared

RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = RGB_SUFFIXES + TIFF_SUFFIXES


class DataError(ValueError):
    """A data set that cannot be read or does not fit the model."""


@dataclass
class ImageSet:
    """Labelled images, read one at a time.

    Attributes:
        name: short name for result files (``knn_scores_10way_<name>.csv``).
        classes: class names; label ``i`` is ``classes[i]``.
        labels: ``[N]`` class indices (single-label) or ``[N, C]`` 0/1 (multi-label).
        items: one identifier per image (a path or ``split/index``), for messages and fingerprints.
        read: ``read(i)`` -> image ``i`` as stored, float32 ``[C, H, W]``.
        test_mask: ``[N]`` bool, True for the data set's own test split; ``None`` = split per seed.
        bands: names of the stored bands in order (``R, G, B`` for JPEG/PNG); ``None`` = not known.
    """

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    items: list[str]
    read: Callable[[int], np.ndarray] = field(repr=False)
    test_mask: np.ndarray | None = None
    bands: tuple[str, ...] | None = None

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.items)


def read_image(path: str | Path) -> np.ndarray:
    """One image file as float32 ``[C, H, W]`` in its stored units (8-bit RGB for JPEG/PNG)."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array, axes = np.asarray(series.asarray()), series.axes
            if array.ndim == 2:
                array = array[None]
            elif array.ndim == 3:
                if "S" in axes:  # samples per pixel (GDAL, rasterio): the file says where the bands are
                    array = np.moveaxis(array, axes.index("S"), 0)
                elif array.shape[-1] < min(array.shape[:2]):  # else the band axis is the smallest one
                    array = array.transpose(2, 0, 1)
            else:
                raise DataError(f"{path}: a GeoTIFF with shape {array.shape}; expected [H, W], [H, W, C] or [C, H, W]")
        else:
            from PIL import Image

            with Image.open(path) as img:
                if img.mode.startswith(("I", "F")):  # convert("RGB") would clip 16-bit values at 255
                    raise DataError(f"{path}: a {img.mode} image (16/32-bit); JPEG/PNG are read as 8-bit RGB, "
                                    "so save it as 8-bit or as a GeoTIFF (read with its stored values)")
                array = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    except DataError:
        raise
    except Exception as err:  # PIL and tifffile raise many types for broken files
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None
    return array.astype(np.float32)


def _image_files(folder: Path) -> list[Path]:
    # hidden files are skipped: macOS leaves "._<name>.jpg" metadata files (not images) next to copied images
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folder_dataset(root: str | Path, name: str | None = None) -> ImageSet:
    """A class-per-folder tree ``root/<class>/<image>`` (JPEG, PNG or GeoTIFF); classes sorted by name.

    Hidden folders and files (names starting with ``.``: ``.DS_Store``, ``._x.jpg``) are skipped.

    Raises:
        DataError: ``root`` missing or without class folders, a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (expected a class-per-folder tree root/<class>/<image>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders (expected root/<class>/<image>, images with suffix "
                        f"{', '.join(IMAGE_SUFFIXES)})")
    files, labels = [], []
    for index, cls in enumerate(classes):
        found = _image_files(root / cls)
        if not found:
            raise DataError(f"class folder {root / cls} has no images (suffixes {', '.join(IMAGE_SUFFIXES)}); "
                            "remove it or add images")
        files += found
        labels += [index] * len(found)
    return ImageSet(name=name or _default_name(root), classes=tuple(classes), labels=np.array(labels),
                    items=[str(f) for f in files], read=lambda i: read_image(files[i]), bands=_stored_bands(files))


def multilabel_dataset(root: str | Path, labels_file: str | Path, name: str | None = None) -> ImageSet:
    """Images under ``root`` with several labels each, listed in ``labels_file``.

    ``labels_file`` is a JSON object ``{"relative/path.tif": ["label", ...], ...}`` or a CSV with a header
    and columns ``file,labels`` (labels separated by ``;``). Classes are the sorted set of all labels.
    """
    root, labels_file = Path(root), Path(labels_file)
    if not labels_file.is_file():
        raise DataError(f"labels file not found: {labels_file}")
    if labels_file.suffix.lower() == ".json":
        table = json.loads(labels_file.read_text())
        if not isinstance(table, dict):
            raise DataError(f"{labels_file}: expected a JSON object {{file: [labels]}}, got {type(table).__name__}")
        bad = [k for k, v in table.items() if not isinstance(v, list) or not all(isinstance(x, str) for x in v)]
        if bad:  # list("forest") would silently make the labels f, o, r, e, s, t
            raise DataError(f"{labels_file}: the labels of {bad[0]!r} are {table[bad[0]]!r}; expected a list of "
                            'label strings, e.g. {"a.tif": ["forest", "water"]}')
        rows = [(str(k), [x.strip() for x in v if x.strip()]) for k, v in table.items()]
    else:
        with labels_file.open(newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's CSVs start with a BOM
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", "labels"} <= set(reader.fieldnames):
                raise DataError(f"{labels_file}: expected CSV columns 'file' and 'labels', got {reader.fieldnames}")
            rows = [(r["file"], [s.strip() for s in (r["labels"] or "").split(";") if s.strip()]) for r in reader]
    if not rows:
        raise DataError(f"{labels_file} lists no images")
    files = [root / f for f, _ in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images in {labels_file} are missing under {root}: {', '.join(missing[:5])}")
    classes = sorted({label for _, labels in rows for label in labels})
    if not classes:
        raise DataError(f"{labels_file} gives no image any label; expected labels per image "
                        "(JSON lists or ';'-separated in the CSV column 'labels')")
    matrix = np.zeros((len(rows), len(classes)), dtype=np.int64)
    for i, (_, labels) in enumerate(rows):
        matrix[i, [classes.index(label) for label in labels]] = 1
    return ImageSet(name=name or _default_name(root), classes=tuple(classes), labels=matrix,
                    items=[str(f) for f in files], read=lambda i: read_image(files[i]), bands=_stored_bands(files))


def geobench_dataset(task_name: str, band_names: Sequence[str] | None = None,
                     benchmark: str = "classification_v1.0") -> ImageSet:
    """A GEO-Bench classification task (e.g. ``m-eurosat``) from the user's local copy, via ``geobench``.

    The task's own train split fits the probes and its test split evaluates them (``test_mask``);
    ``band_names`` are GEO-Bench band names passed to ``sample.pack_to_3d`` (default: all bands).
    """
    try:
        import geobench
    except ImportError:
        raise DataError("GEO-Bench data sets need the 'geobench' package and the data downloaded locally "
                        "(pip install geobench; geobench-download; see GEO-Bench's README)") from None
    tasks = {task.dataset_name: task for task in geobench.task_iterator(benchmark_name=benchmark)}
    if task_name not in tasks:
        raise DataError(f"GEO-Bench task {task_name!r} not found in {benchmark}; available: {', '.join(sorted(tasks))}")
    task = tasks[task_name]
    splits = [(split, task.get_dataset(split=split)) for split in ("train", "test")]
    samples = [(split, i) for split, ds in splits for i in range(len(ds))]
    by_split = dict(splits)

    def read(i: int) -> np.ndarray:
        split, j = samples[i]
        array, _ = by_split[split][j].pack_to_3d(band_names=band_names)  # [H, W, C]
        return np.asarray(array, dtype=np.float32).transpose(2, 0, 1)

    stacked = np.stack([np.asarray(by_split[split][j].label) for split, j in samples])
    # geobench names them class_names (Classification) or class_name (MultiLabelClassification)
    names = getattr(task.label_type, "class_names", None) or getattr(task.label_type, "class_name", None)
    count = stacked.shape[1] if stacked.ndim == 2 else int(stacked.max()) + 1
    classes = tuple(names) if names else tuple(str(c) for c in range(count))
    return ImageSet(name=task_name, classes=classes, labels=stacked, items=[f"{s}/{j}" for s, j in samples],
                    read=read, test_mask=np.array([s == "test" for s, _ in samples]))


def _stored_bands(files: Sequence[Path]) -> tuple[str, ...] | None:
    """``R, G, B`` when every file is a JPEG/PNG (read as 8-bit RGB); GeoTIFF bands have no names in the file."""
    return ("R", "G", "B") if all(f.suffix.lower() in RGB_SUFFIXES for f in files) else None


def _default_name(root: Path) -> str:
    return root.resolve().name.replace("_", "-")


def model_batches(data: ImageSet, model: SlimModel, batch_size: int, *, indices: Sequence[int] | None = None,
                  bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None,
                  units: str | None = None) -> Iterator[Prepared]:
    """The model's input ``[B, C, S, S]`` (``S = cfg.arch.img_size``) for ``data``, ``batch_size`` images at a time,
    as :class:`~slimkern.prepare.Prepared` batches (``run(p.x, **p.inputs)``).

    ``band_names`` names the stored bands (default: ``data.bands``); ``bands`` picks 0-based band indices first.

    Raises:
        DataError: an unreadable file (named), bands that do not fit the model.
    """
    size = model.cfg.arch.img_size
    order = range(len(data)) if indices is None else indices
    names = band_names if band_names is not None else data.bands
    for start in range(0, len(order), batch_size):
        images = []
        for i in order[start:start + batch_size]:
            image = data.read(i)
            if names is not None and len(names) != len(image):
                raise DataError(f"{data.items[i]}: {len(image)} bands, but {len(names)} band names were given "
                                f"({', '.join(names)})")
            if bands is not None:
                if max(bands) >= len(image) or min(bands) < 0:
                    raise DataError(f"{data.items[i]}: has {len(image)} bands, cannot select band indices "
                                    f"{list(bands)}")
                image = image[list(bands)]
            if names is None and len(image) != len(model.spec.bands):
                hint = "" if bands is not None else " (name them with band_names=[...], CLI --band-names)"
                raise DataError(f"{data.items[i]}: {len(image)} bands, but {model.cfg.name} expects "
                                f"{len(model.spec.bands)} in this order: {', '.join(model.spec.bands)}{hint}")
            x = torch.from_numpy(image)[None]
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            images.append(x)
        selected = None if names is None else [names[b] for b in bands] if bands is not None else list(names)
        # unnamed bands were selected into the model's order by index: say so to prepare
        yield model.prepare(torch.cat(images), bands=selected or model.spec.bands, units=units)
