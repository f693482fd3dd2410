"""The plausibility check of ``run()``'s input: cheap statistics of a normalised batch against the input contract.

Normalised input is of order one per band (``(x - mean) / std``, or values in [0, 1] for SatMAE-MS and CROMA), so a
batch that is not is almost surely raw data fed by mistake. The check refuses (``check="error"``, the default),
warns (``"warn"``) or is skipped (``"off"``) when:

- a band's median is beyond +-50: raw digital numbers (Sentinel-2 / HLS reflectance x 10000) where normalised
  input is expected;
- every value is an integer in 0..255 with some above 1: 8-bit pixels that were never scaled;
- a band is constant over the whole batch: a missing band filled with a constant;
- a wavelength lies outside 0.3-30 micrometres: nanometres, or a radar frequency in GHz, given as micrometres.

The statistics come from a strided sample of at most 4 images x 32 x 32 pixels per band, so the check costs the
same at every image size (``benchmarks/bench_input_check.py``); a constant band in the sample is confirmed on the
full batch before it is reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

CHECK_MODES = ("error", "warn", "off")
#: Largest plausible |median| of a normalised band (Sentinel-2 DN medians are in the hundreds to thousands).
DN_MEDIAN = 50.0
#: Plausible centre wavelengths of optical/thermal bands, micrometres.
OPTICAL_UM = (0.3, 30.0)
#: Sentinel-1's C-band frequency in GHz, which examples pass as a "wavelength" (torchgeo#3931).
S1_GHZ = 5.405
_SAMPLE_IMAGES, _SAMPLE_SIDE = 4, 32


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


def _sample(x: torch.Tensor) -> torch.Tensor:
    """``[C, n]`` float32: a strided sample of every band (first frame of a time series)."""
    if x.dim() == 5:
        x = x[:, :, 0]
    height, width = x.shape[-2:]
    step_h, step_w = max(1, height // _SAMPLE_SIDE), max(1, width // _SAMPLE_SIDE)
    sample = x[:_SAMPLE_IMAGES, :, ::step_h, ::step_w]
    return sample.transpose(0, 1).reshape(x.shape[1], -1).float()


def input_problems(x: torch.Tensor, bands: Sequence[str], wavelengths_um: Sequence[float] = (), *,
                   sar_by_name: bool = False) -> list[str]:
    """What looks wrong about the normalised batch ``x`` ``[B, C, (T,) H, W]`` (bands named ``bands``)."""
    problems = []
    sample = _sample(x)
    low, high = sample.aminmax()
    if bool((sample == sample.round()).all()) and low >= 0 and 1 < high <= 255:
        problems.append(f"every value is an integer in 0..{high.item():g}: 8-bit pixel values, not normalised input")
    else:
        medians = sample.median(dim=1).values.tolist()
        raw = [f"{band} {m:g}" for band, m in zip(bands, medians, strict=True) if abs(m) > DN_MEDIAN]
        if raw:
            problems.append(f"band medians {', '.join(raw)} are beyond +-{DN_MEDIAN:g}: raw digital numbers "
                            "(e.g. reflectance x 10000), not normalised input")
    lows, highs = sample.aminmax(dim=1)
    for c in (lows == highs).nonzero().flatten().tolist():
        full_low, full_high = x[:, c].aminmax()
        if full_low == full_high:
            problems.append(f"band {bands[c]} is constant ({full_low.item():g}) in the whole batch: a missing band "
                            "filled with a constant")
    for um in wavelengths_um:
        if sar_by_name and um == S1_GHZ:
            problems.append(f"wavelength {um:g} is Sentinel-1's C-band frequency in GHz, not a wavelength; give SAR "
                            "bands by name ('VV', 'VH')")
        elif not OPTICAL_UM[0] <= um <= OPTICAL_UM[1]:
            unit = "nanometres" if um > OPTICAL_UM[1] else "GHz or metres"
            problems.append(f"wavelength {um:g} um is outside {OPTICAL_UM[0]:g}-{OPTICAL_UM[1]:g} um: "
                            f"{unit}? (Sentinel-2 B04 is 0.665 um)")
    return problems


def check_input(name: str, x: torch.Tensor, bands: Sequence[str], wavelengths_um: Sequence[float] = (), *,
                check: str = "error", sar_by_name: bool = False) -> None:
    """Raise ``ValueError`` (``check="error"``) or warn (``"warn"``) with every problem of :func:`input_problems`."""
    if check_mode(check) == "off":
        return
    problems = input_problems(x, bands, wavelengths_um, sar_by_name=sar_by_name)
    if not problems:
        return
    message = (f"{name}: the input does not look like what this model takes: {'; '.join(problems)}. Turn raw data "
               "into the model's input with model.prepare(raw, bands=[...], units=...) (the contract is model.spec), "
               "or pass check='warn' / check='off' to run()")
    if check == "error":
        raise ValueError(message)
    warnings.warn(message, InputCheckWarning, stacklevel=4)
