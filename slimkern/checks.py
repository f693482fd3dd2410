"""The input checks of :meth:`SlimModel.check_inputs <slimkern.model.SlimModel.check_inputs>`: one small function per
fact about a call, each raising a message that says what was wrong and what is expected.

``check_inputs`` runs them once per call, in the order below, before any computation; every public entry point
(``run``, ``reference``, ``validate``, ``run_widths``, the serving engine and the HTTP server) goes through it once
and then computes on the checked input without checking again. The plausibility of the values against the
checkpoint's input contract (raw digital numbers, unscaled 8-bit pixels, ...) is :mod:`slimkern.input_check`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .input_check import check_input
from .plan import check_width

OUTPUTS = ("pooled", "tokens")
LAYOUTS = {4: "[B, C, H, W]", 5: "[B, C, T, H, W]"}


def check_widths(width: float | Iterable[float] | None) -> float | list[float] | None:
    """A width as a float, a sequence of widths as a list of floats, ``None`` as is (no width given yet: a
    serving budget resolves it later)."""
    if width is None:
        return None
    if isinstance(width, Iterable) and not isinstance(width, (str, bytes, torch.Tensor)):
        return [check_width(w) for w in width]
    return check_width(width)


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; expected one of {', '.join(map(repr, OUTPUTS))}")
    return output


def check_extra_inputs(model, inputs: dict) -> None:
    """Only the model's own keyword inputs (wavelengths, GSD, time, ...)."""
    unknown = sorted(set(inputs) - set(model.extra_inputs))
    if unknown:
        takes = f"takes {', '.join(model.extra_inputs)}" if model.extra_inputs else "takes no extra inputs"
        raise TypeError(f"{model.cfg.name} {takes}; got unexpected {', '.join(unknown)}")


def check_tensor(model, x: torch.Tensor) -> None:
    """A tensor of an accepted rank with the model's band count and at least one image."""
    name = model.cfg.name
    layouts = " or ".join(LAYOUTS[r] for r in model.input_ranks)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor {layouts}, got {type(x).__name__}")
    if x.dim() not in model.input_ranks:
        raise ValueError(f"{name}: x must be {layouts}, got shape {tuple(x.shape)}")
    bands = model.cfg.bands
    if not model.any_band_count and x.shape[1] != len(bands):
        raise ValueError(f"{name}: x has {x.shape[1]} bands (shape {tuple(x.shape)}), expected {len(bands)} "
                         f"in this order: {', '.join(bands)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: x is an empty batch (shape {tuple(x.shape)})")


def check_dtype(model, x: torch.Tensor) -> None:
    if x.dtype != model.dtype:
        raise TypeError(f"{model.cfg.name}: x is {x.dtype} but the model runs in {model.dtype}; "
                        f"convert with x.to({model.dtype}) (or load the model with dtype={x.dtype})")


def check_device(model, x: torch.Tensor) -> None:
    if x.device != model.device:
        raise ValueError(f"{model.cfg.name}: x is on {x.device} but the model is on {model.device}; "
                         f"use x.to('{model.device}')")


def check_finite(name: str, x: torch.Tensor) -> None:
    """No NaN or Inf anywhere in ``x``: one pass over every value (the only check that reads them all)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: x contains {bad} NaN or Inf values; clean or mask the input first")


def check_plausible(model, x: torch.Tensor, inputs: dict, check: str) -> None:
    """The values against the input contract: raw DN, 8-bit pixels, a constant band, wavelengths in other units
    (:mod:`slimkern.input_check`; ``check`` is ``"error"``, ``"warn"`` or ``"off"``)."""
    check_input(model.cfg.name, x, model.input_band_names(x), model.input_wavelengths_um(inputs), check=check,
                unit=model.spec.unit, sar_by_name=model.spec.sar_by_name)
