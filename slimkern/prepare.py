"""``model.prepare``: raw sensor values with named bands -> the tensor (and ``run`` inputs) a checkpoint expects.

What a user has is an array ``[B, C, H, W]`` (or ``[B, C, T, H, W]``) of raw values with named bands, in any order,
maybe with extra bands. :func:`prepare` applies the checkpoint's :class:`~slimkern.spec.InputSpec` in this order:

1. **bands**: names are resolved through :mod:`slimkern.bands` (``B8``/``B08``/``nir``, ``red``/``B04``, an HLS
   S30 file's ``B8A`` -> ``NIR_NARROW``, ...); the model's band set is selected in its order, extra bands are
   dropped (noted); a missing band raises with what is missing and what was given. Wavelength-conditioned models
   (DOFA, Copernicus-FM, Panopticon) keep every band their wavelength table knows, in the given order.
2. **units**: ``units`` says what ``raw`` holds: ``"DN"`` (the product's stored integers: Sentinel-2 / HLS
   reflectance x 10000, 8-bit pixels for RGB models), ``"reflectance"`` (0-1), ``"dB"`` or ``"linear"`` (SAR
   backscatter); default: the spec's unit. ``add_offset`` is added to DN first (``-1000`` for Sentinel-2 products
   of processing baseline 04.00 or later, their ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET``). Then model units =
   ``(DN + spec.offset) * spec.scale``.
3. **resampling** (optional): ``gsd`` (metres per pixel of ``raw``) resamples to the spec's GSD; ``size`` (an
   int, ``(h, w)`` or ``"native"``) resizes to that size. Bicubic with antialiasing.
4. **normalisation** per the spec: the pretraining statistics, SatMAE's SentinelNormalize, CROMA's batch rescale, or
   for DOFA and Panopticon the data set's own statistics (``stats=(mean, std)``, one value per band of ``raw``, in
   its units; else the batch's own, noted).
5. **run inputs**: the wavelengths (and bandwidths) of the kept bands for wavelength-conditioned models.

The result is a :class:`Prepared`: ``model.run(p.x, width, **p.inputs)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .bands import SAR_BANDS, resolve_bands

if TYPE_CHECKING:
    from .model import SlimModel

#: Units ``raw`` may be in.
RAW_UNITS = ("DN", "reflectance", "dB", "linear")


@dataclass(frozen=True)
class Prepared:
    """The model's input made from raw data, and what was done to make it.

    Attributes:
        x: normalised input on the model's device, in its dtype.
        inputs: keyword inputs of ``run`` (wavelengths, bandwidths) for the kept bands; ``{}`` for most models.
        bands: canonical names of the bands of ``x``, in order; ``given``: the caller's names for them.
        units: the units ``raw`` was in; ``normalization``: how ``x`` was normalised.
        notes: dropped bands, resampling, statistics used.
    """

    x: torch.Tensor
    inputs: dict[str, Any]
    bands: tuple[str, ...]
    given: tuple[str, ...]
    units: str
    normalization: str
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for provenance metadata."""
        return {"prepared": True, "bands": list(self.bands), "given": list(self.given), "units": self.units,
                "normalization": self.normalization, **self.settings, "notes": list(self.notes)}


def prepare(model: SlimModel, raw, *, bands: Sequence[str] | None, units: str | None = None,
            gsd: float | None = None, size: int | tuple[int, int] | str | None = None, add_offset: float = 0.0,
            stats: tuple[Sequence[float], Sequence[float]] | None = None) -> Prepared:
    """Turn ``raw`` into ``model``'s input by its spec (see the module doc for every step)."""
    spec, name = model.spec, model.cfg.name
    x = _as_tensor(raw, name, model.input_ranks)
    given = _band_names(bands, x.shape[1], spec, name)
    resolved = resolve_bands(given, _targets(model))
    keep, notes = _select(model, given, resolved)
    x = x.to(model.device, _compute_dtype(model.dtype))  # first: integer dtypes (uint16 DN) lack index_select
    x = x.index_select(1, torch.tensor(keep, device=x.device))
    kept = tuple(resolved[i] for i in keep)
    units = spec.unit if units is None else units
    x = _to_model_units(x, spec, units, add_offset, name, notes)
    x = _resample(x, spec, gsd, size, notes)
    if stats is not None:
        stats = _check_stats(stats, len(given), name)
        stats = tuple([values[i] for i in keep] for values in stats)
    x = _normalise(model, x, kept, stats, notes)
    settings = {"add_offset": add_offset, "scale": spec.scale, "offset": spec.offset,
                "size": list(x.shape[-2:]), "gsd_m": gsd}
    return Prepared(x.to(model.dtype).contiguous(), model.spectral_inputs(kept), kept,
                    tuple(given[i] for i in keep), units, spec.normalization, tuple(notes), settings)


def _as_tensor(raw, name: str, ranks: tuple[int, ...]) -> torch.Tensor:
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind not in "uif":
            raise TypeError(f"{name}: prepare takes numeric arrays of raw values, got dtype {raw.dtype}")
        native = np.float64 if raw.dtype.kind == "f" and raw.dtype.itemsize > 8 else raw.dtype.newbyteorder("=")
        raw = torch.from_numpy(np.ascontiguousarray(raw, dtype=native))  # native byte order; no longdouble in torch
    if not isinstance(raw, torch.Tensor):
        raise TypeError(f"{name}: prepare takes a numpy array or torch tensor of raw values, got {type(raw).__name__}")
    if raw.dtype == torch.bool or raw.is_complex():
        raise TypeError(f"{name}: prepare takes real raw values, got {raw.dtype}")
    layouts = " or ".join({4: "[B, C, H, W]", 5: "[B, C, T, H, W]"}[r] for r in ranks)
    if raw.dim() not in ranks or raw.shape[0] == 0:
        raise ValueError(f"{name}: raw must be a non-empty {layouts}, got shape {tuple(raw.shape)}")
    return raw


def _band_names(bands, count: int, spec, name: str) -> list[str]:
    if bands is None:
        raise ValueError(f"{name}: name the bands of raw, in its order (bands=[...]); this model takes "
                         f"{', '.join(spec.bands)}. If raw is already in that order, pass bands=model.spec.bands")
    if isinstance(bands, str) or not all(isinstance(b, str) for b in bands):
        raise TypeError(f"{name}: bands must be a list of band names, got {bands!r}")
    if len(bands) != count:
        raise ValueError(f"{name}: {len(bands)} band names ({', '.join(bands)}) for {count} bands of raw")
    return list(bands)


def _targets(model: SlimModel) -> tuple[str, ...]:
    """The canonical bands ``model`` can place: its band set, or for wavelength-conditioned models every band of
    its wavelength table (with statistics, where the normalisation needs them) and SAR bands taken by name."""
    spec = model.spec
    if not spec.any_bands:
        return spec.bands
    if spec.normalization == "standardize":
        return tuple(b for b in spec.bands if spec.wavelengths.wavelength(b) is not None)
    return spec.wavelengths.bands + (SAR_BANDS if spec.sar_by_name else ())


def _select(model: SlimModel, given: list[str], resolved: list[str | None]) -> tuple[list[int], list[str]]:
    """Indices into ``raw``'s bands to keep, in the model's order, and notes on what was dropped."""
    spec, name = model.spec, model.cfg.name
    where = {band: i for i, band in enumerate(resolved) if band is not None}
    if spec.any_bands:
        keep = [i for i, band in enumerate(resolved) if band is not None]
        if not keep:
            raise ValueError(f"{name}: none of the bands {', '.join(given)} is known to this model; it takes "
                             f"{', '.join(_targets(model))}")
    else:
        for band_set in spec.accepted_band_sets:
            if all(b in where for b in band_set):
                keep = [where[b] for b in band_set]
                break
        else:
            need = "; or ".join(f"{', '.join(s)} (missing {', '.join(b for b in s if b not in where)})"
                                for s in spec.accepted_band_sets)
            raise ValueError(f"{name}: raw lacks bands this model needs: {need}. Given: {', '.join(given)}"
                             + _unknown_hint(given, resolved))
    dropped = [given[i] for i in range(len(given)) if i not in keep]
    notes = [f"dropped band(s) {', '.join(dropped)}: not used by {name}"] if dropped else []
    return keep, notes


def _unknown_hint(given: list[str], resolved: list[str | None]) -> str:
    unknown = [g for g, r in zip(given, resolved, strict=True) if r is None]
    return f" (not recognised: {', '.join(unknown)})" if unknown else ""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_model_units(x: torch.Tensor, spec, units: str, add_offset: float, name: str, notes: list[str]
                    ) -> torch.Tensor:
    if units not in RAW_UNITS and units != spec.unit:
        raise ValueError(f"{name}: units must be one of {', '.join(RAW_UNITS)}, got {units!r}")
    if not math.isfinite(add_offset) or (add_offset and units != "DN"):
        raise ValueError(f"{name}: add_offset applies to DN (e.g. -1000 for Sentinel-2 processing baseline >= "
                         f"04.00), got add_offset={add_offset!r} with units={units!r}")
    x = x + add_offset if add_offset else x
    if spec.unit == "any":
        notes.append(f"values used in their own units ({units}): {name} normalises each band by statistics")
        return x
    if spec.unit == "DN" and units == "reflectance":
        x = x * spec.quantification
    elif spec.unit == "dB" and units == "linear":
        if bool((x <= 0).any()):
            raise ValueError(f"{name}: linear backscatter must be positive to convert to dB; raw has "
                             f"{int((x <= 0).sum())} values <= 0 (mask them first)")
        x = 10 * torch.log10(x)
    elif units != spec.unit:
        takes = "SAR backscatter (dB or linear)" if spec.unit == "dB" else "DN or reflectance"
        raise ValueError(f"{name}: raw in {units!r} cannot be converted: this model takes {takes} ({spec.sensor})")
    return (x + spec.offset) * spec.scale if (spec.offset, spec.scale) != (0.0, 1.0) else x


def _resample(x: torch.Tensor, spec, gsd: float | None, size, notes: list[str]) -> torch.Tensor:
    height, width = x.shape[-2:]
    if gsd is not None:
        if isinstance(gsd, bool) or not isinstance(gsd, (int, float)) or not math.isfinite(gsd) or gsd <= 0:
            raise ValueError(f"gsd must be the positive ground sample distance of raw in metres, got {gsd!r}")
        if spec.gsd_m is None:
            notes.append(f"gsd {gsd:g} m kept: the pretraining GSD varies per image")
        elif gsd != spec.gsd_m:
            factor = gsd / spec.gsd_m
            target = (max(1, round(height * factor)), max(1, round(width * factor)))
            notes.append(f"resampled from {gsd:g} m to the pretraining {spec.gsd_m:g} m: {height}x{width} -> "
                         f"{target[0]}x{target[1]} px")
            x, (height, width) = _resize(x, target), target
    if size is not None:
        target = _size(size, spec)
        if target != (height, width):
            notes.append(f"resized {height}x{width} -> {target[0]}x{target[1]} px (bicubic, antialiased)")
            x = _resize(x, target)
    return x


def _size(size, spec) -> tuple[int, int]:
    if size == "native":
        return spec.image_size, spec.image_size
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        return tuple(size)
    raise ValueError(f"size must be 'native', a positive int or (height, width), got {size!r}")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    frames = x.shape[2] if x.dim() == 5 else None
    flat = x.transpose(1, 2).flatten(0, 1) if frames else x
    out = F.interpolate(flat, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.unflatten(0, (x.shape[0], frames)).transpose(1, 2) if frames else out


def _normalise(model: SlimModel, x: torch.Tensor, kept: tuple[str, ...], stats, notes: list[str]) -> torch.Tensor:
    spec, name = model.spec, model.cfg.name
    if stats is not None and spec.normalization != "dataset":
        raise ValueError(f"{name} normalises with its own {spec.normalization} statistics; stats= is for models "
                         "normalised by the data set's statistics (DOFA, Panopticon)")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if spec.normalization == "standardize":
        index = [spec.bands.index(b) for b in kept]
        mean = torch.tensor([spec.mean[i] for i in index], dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor([spec.std[i] for i in index], dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std
    if spec.normalization != "dataset":
        return model.normalize(x)
    if stats is None:
        dims = [d for d in range(x.dim()) if d != 1]
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
        notes.append("standardised with this batch's own per-band statistics; pass stats=(mean, std) of your data "
                     "set for embeddings that do not depend on the batch")
    else:
        mean, std = (torch.tensor(values, dtype=x.dtype, device=x.device).view(shape) for values in stats)
    flat = [kept[i] for i in (std.flatten() <= 0).nonzero().flatten().tolist()]
    if flat:
        raise ValueError(f"{name}: band(s) {', '.join(flat)} have no spread (std <= 0), so they cannot be "
                         "standardised (a constant band? give stats= or drop it)")
    return (x - mean) / std


def _check_stats(stats, count: int, name: str) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of the data set, one value per band of ``raw`` in its order and units."""
    try:
        mean, std = stats
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: stats must be (mean, std), each one number per band of raw") from None
    if len(mean) != count or len(std) != count or not all(map(math.isfinite, mean + std)):
        raise ValueError(f"{name}: stats need one finite mean and std per band of raw ({count}), got {len(mean)} "
                         f"and {len(std)}")
    return mean, std
