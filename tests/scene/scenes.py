"""Scene-test helpers: real GeoTIFFs written with rasterio, tiny models, and the expected embedding of a window
computed from the numpy array the file was written from (not from the pipeline's reader or preparation)."""

from __future__ import annotations

import warnings

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

import slimkern

CRS = "EPSG:32632"
TRANSFORM = from_origin(600_000, 5_200_000, 10, 10)


def write_raster(path, data: np.ndarray, *, crs=CRS, transform=TRANSFORM, nodata=None, descriptions=None,
                 interleave="pixel", block=32) -> str:
    """``data`` ``[C, H, W]`` as a tiled GeoTIFF."""
    count, height, width = data.shape
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=data.dtype.name,
                   transform=transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
                   interleave=interleave, **({"crs": crs} if crs else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for the no-CRS file
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if descriptions:
                dst.descriptions = tuple(descriptions)
    return str(path)


def rgb_model(**overrides) -> slimkern.SlimModel:
    """vit_tiny_eurosat's architecture (64 px, patch 8, bands R, G, B, pixels / 255), small and random."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("vit_tiny_eurosat", **{"depth": 2, "dim": 64, "num_heads": 2, **overrides})


def sar_model() -> slimkern.SlimModel:
    """SoftCon's Sentinel-1 encoder (bands VV, VH in dB), 28 px chips of 2 x 2 patches, small and random."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("softcon_vits14_s1", img_size=28, depth=1, dim=48, num_heads=2)


def window(data: np.ndarray, row: int, col: int, crop: int, nodata) -> tuple[np.ndarray, np.ndarray]:
    """The raw chip ``[C, crop, crop]`` (float64) at ``(row, col)`` of the scene array ``data``, nodata and
    outside-the-scene pixels set to the mean of the chip's valid pixels per band, and its validity."""
    count, height, width = data.shape
    chip = np.zeros((count, crop, crop), np.float64)
    valid = np.zeros((crop, crop), bool)
    rows, cols = min(crop, height - row), min(crop, width - col)
    part = data[:, row:row + rows, col:col + cols].astype(np.float64)
    chip[:, :rows, :cols] = part
    ok = np.isfinite(part).all(0)
    if nodata is not None:
        ok &= ~(part == nodata).any(0)
    valid[:rows, :cols] = ok
    chip = np.nan_to_num(chip)
    if valid.any():
        chip[:, ~valid] = chip[:, valid].mean(1)[:, None]
    return chip, valid


def expected_input(model, data: np.ndarray, row: int, col: int, crop: int, order, nodata, scale: float):
    """The normalised chip at ``(row, col)`` (:func:`window`; bands ``order`` of the file, scaled by ``scale`` and
    standardised with the model's statistics, in numpy), and its validity."""
    chip, valid = window(data, row, col, crop, nodata)
    mean, std = np.array(model.cfg.mean)[:, None, None], np.array(model.cfg.std)[:, None, None]
    x = (chip[list(order)] * scale - mean) / std
    return torch.from_numpy(x).float(), valid


def expected_embedding(model, x: torch.Tensor, width: float, output: str = "pooled") -> np.ndarray:
    """``model.run`` on one chip (without the plausibility check: some tests feed a constant band on purpose)."""
    return model.run(x[None], width, output=output, check="off")[0].numpy()
