"""The plausibility check of ``run()``'s input: cheap statistics of a normalised batch against the input contract.

Normalised input is of order one per band (``(x - mean) / std``, or values in [0, 1] for SatMAE-MS and CROMA), so a
batch that is not is almost surely raw data fed by mistake. The check refuses (``check="error"``, the default),
warns (``"warn"``) or is skipped (``"off"``) when:

- a band's median is beyond +-50: raw digital numbers (Sentinel-2 / HLS reflectance x 10000) where normalised
  input is expected; for models on SAR decibels, beyond +-8: raw backscatter in dB (about -5 to -30) where
  standardised values are expected;
- every value is an integer in 0..255 with some above 1: 8-bit pixels that were never scaled;
- a band is constant over the whole batch: a missing band filled with a constant;
- a wavelength lies outside 0.3-30 micrometres: nanometres, or a radar frequency in GHz, given as micrometres.

The statistics come from a strided sample of at most 2 images x 16 x 16 pixels per band, so the check costs the
same at every image size (``benchmarks/bench_input_check.py``); a constant band in the sample is confirmed on the
full batch before it is reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

CHECK_MODES = ("error", "warn", "off")
#: Largest plausible |median| of a normalised band (Sentinel-2 DN medians are in the hundreds to thousands).
DN_MEDIAN = 50.0
#: The same for models whose raw unit is dB: standardised backscatter is within a few std of 0.
DB_MEDIAN = 8.0
#: Plausible centre wavelengths of optical/thermal bands, micrometres.
OPTICAL_UM = (0.3, 30.0)
#: Sentinel-1's C-band frequency in GHz, which examples pass as a "wavelength" (torchgeo#3931).
S1_GHZ = 5.405
_SAMPLE_IMAGES, _SAMPLE_SIDE = 2, 16


class InputCheckWarning(UserWarning):
    """``check="warn"``: the input does not look like what the model expects."""


def check_mode(check: str) -> str:
    if check not in CHECK_MODES:
        raise ValueError(f"check must be one of {', '.join(map(repr, CHECK_MODES))}, got {check!r}")
    return check


def wavelength_values(values) -> tuple[float, ...]:
    """The numeric entries of a wavelength list as given to ``run`` (non-numbers, e.g. SAR names, are skipped)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return ()
    return tuple(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))


def check_spectral_list(name: str, values, bands: int, what: str) -> tuple[float, ...]:
    """A list/tuple/1-D tensor of ``bands`` finite numbers -> a tuple of floats (TypeError/ValueError otherwise)."""
    if isinstance(values, torch.Tensor):
        if values.dim() != 1:
            raise ValueError(f"{name}: {what} must be 1-D (one value per band), got shape {tuple(values.shape)}")
        values = values.detach().cpu().double().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: {what} must be a list of numbers (one per band), got {type(values).__name__}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name}: {what} must be numbers, got {list(values)!r}")
    values = tuple(float(v) for v in values)
    if len(values) != bands:
        raise ValueError(f"{name}: got {len(values)} {what} for {bands} bands; pass one value per band of x")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: {what} must be finite, got {list(values)}")
    return values


def _sample(x: torch.Tensor) -> np.ndarray:
    """``[C, n]`` on the host: a strided sample of every band (first frame of a time series). The statistics run in
    numpy: on a few hundred values per band, torch's threaded kernels cost more than the work."""
    if x.dim() == 5:
        x = x[:, :, 0]
    height, width = x.shape[-2:]
    step_h, step_w = -(-height // _SAMPLE_SIDE), -(-width // _SAMPLE_SIDE)  # ceil: at most SIDE x SIDE
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        view = x.detach().numpy()[:_SAMPLE_IMAGES, :, ::step_h, ::step_w]  # no copy before the one below
    else:
        view = x[:_SAMPLE_IMAGES, :, ::step_h, ::step_w].detach().to("cpu", torch.float32).numpy()
    return view.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)  # may be a view of x: never modify it


def input_problems(x: torch.Tensor, bands: Sequence[str], wavelengths_um: Sequence[float] = (), *,
                   unit: str = "DN", sar_by_name: bool = False) -> list[str]:
    """What looks wrong about the normalised batch ``x`` ``[B, C, (T,) H, W]`` (bands named ``bands``)."""
    problems = []
    sample = np.sort(_sample(x), axis=1)  # a copy (the sample may be a view of x); per band: min, max, median
    lows, highs, medians = sample[:, 0], sample[:, -1], sample[:, sample.shape[1] // 2]
    low, high = float(lows.min()), float(highs.max())
    if low >= 0 and 1 < high <= 255 and np.array_equal(sample, np.round(sample)):
        problems.append(f"every value is an integer in 0..{high:g}: 8-bit pixel values, not normalised input")
    elif np.abs(medians).max() > (bound := DB_MEDIAN if unit == "dB" else DN_MEDIAN):
        raw = [f"{band} {m:g}" for band, m in zip(bands, medians.tolist(), strict=True) if abs(m) > bound]
        what = "raw backscatter in dB" if unit == "dB" else "raw digital numbers (e.g. reflectance x 10000)"
        problems.append(f"band medians {', '.join(raw)} are beyond +-{bound:g}: {what}, not normalised input")
    for c in np.flatnonzero(lows == highs).tolist():
        full_low, full_high = x[:, c].aminmax()
        if full_low == full_high:
            problems.append(f"band {bands[c]} is constant ({full_low.item():g}) in the whole batch: a missing band "
                            "filled with a constant")
    if sar_by_name and S1_GHZ in wavelengths_um:
        problems.append(f"wavelength {S1_GHZ:g} is Sentinel-1's C-band frequency in GHz, not a wavelength; give SAR "
                        "bands by name ('VV', 'VH')")
    long = [um for um in wavelengths_um if um > OPTICAL_UM[1]]
    short = [um for um in wavelengths_um if 0 < um < OPTICAL_UM[0]]  # non-positive: refused by the model itself
    for values, hint in ((long, "nanometres where the model takes micrometres?"),
                         (short, "a frequency in GHz, or micrometres where the model takes nanometres?")):
        if values:
            listed = ", ".join(f"{v:g}" for v in values)
            problems.append(f"wavelength{'s' if len(values) > 1 else ''} {listed} um "
                            f"{'are' if len(values) > 1 else 'is'} outside {OPTICAL_UM[0]:g}-{OPTICAL_UM[1]:g} um: "
                            f"{hint} (Sentinel-2 B04 is 0.665 um = 665 nm)")
    return problems


def check_input(name: str, x: torch.Tensor, bands: Sequence[str], wavelengths_um: Sequence[float] = (), *,
                check: str = "error", unit: str = "DN", sar_by_name: bool = False) -> None:
    """Raise ``ValueError`` (``check="error"``) or warn (``"warn"``) with every problem of :func:`input_problems`."""
    if check_mode(check) == "off":
        return
    problems = input_problems(x, bands, wavelengths_um, unit=unit, sar_by_name=sar_by_name)
    if not problems:
        return
    message = (f"{name}: the input does not look like what this model takes: {'; '.join(problems)}. Turn raw data "
               "into the model's input with model.prepare(raw, bands=[...], units=...) (the contract is model.spec), "
               "or pass check='warn' / check='off' to run()")
    if check == "error":
        raise ValueError(message)
    warnings.warn(message, InputCheckWarning, stacklevel=4)
