"""Scene chips -> model input, through the model's own preprocessing contract (:meth:`SlimModel.prepare`).

Band selection by name, unit conversion, normalisation and the run inputs of wavelength-conditioned models are
``model.prepare``'s alone; this module decides only what a scene adds to it:

- **Band names**: the scene's (``bands=``, band descriptions, per-band files); a file without names must have
  exactly the model's bands, in its order (``model.spec.bands`` is then passed).
- **Nodata**: before ``prepare``, each nodata pixel of a chip is set, per band, to the mean of that chip's valid
  pixels (raw units). Every unit conversion and normalisation then sees values of the data's own range (no zeros
  in a log of linear backscatter, no fill in the statistics of batch-normalised models), and the model sees the
  nodata area as a featureless patch of the chip's mean colour.
- **One chip per** ``prepare`` **call**: normalisations that take statistics from the data (CROMA's batch rescale,
  DOFA/Panopticon without ``stats=``) use the chip's own, so a chip's embedding never depends on which chips share
  its batch: it is ``model.run(model.prepare(window))`` for every model.
- **Plausibility check** (``run``'s ``check=``): applied to the chips without any nodata or padding only. A chip
  with a little data and a mean fill is nearly constant, which the check would take for a missing band.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .. import checks
from ..input_check import InputCheckWarning
from ..model import SlimModel
from ..prepare import Prepared
from .source import Scene, SceneError


def scene_bands(model: SlimModel, scene: Scene) -> tuple[str, ...]:
    """The names to pass to ``prepare`` for the scene's bands (see the module docstring)."""
    if scene.band_names is not None:
        return scene.band_names
    if scene.count != len(model.spec.bands):
        raise SceneError(f"scene {scene.id} has {scene.count} unnamed bands but {model.cfg.name} expects "
                         f"{len(model.spec.bands)} ({', '.join(model.spec.bands)}); name the scene's bands "
                         "(bands=/--band-names, band descriptions or per-band files) so they can be selected")
    return tuple(model.spec.bands)


def fill_nodata(chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``chips`` ``[B, C, H, W]`` with the nodata pixels (``valid`` ``[B, H, W]`` false) set to the per-band mean of
    the chip's valid pixels, in place. Chips without valid pixels are left as they are (they are not run)."""
    for chip, ok in zip(chips, valid, strict=True):
        if ok.any() and not ok.all():
            chip[:, ~ok] = chip[:, ok].mean(axis=1, dtype=np.float64)[:, None]
    return chips


def prepare_chips(model: SlimModel, raw: np.ndarray, bands: Sequence[str], *, units: str | None = None,
                  add_offset: float = 0.0, stats=None) -> tuple[torch.Tensor, Prepared]:
    """Raw chips ``[B, C, H, W]`` -> the batch of ``model.prepare`` of each chip (see the module docstring), and the
    first chip's :class:`~slimkern.Prepared` (run inputs and provenance; the same for every chip)."""
    prepared = [model.prepare(raw[i:i + 1], bands=list(bands), units=units, add_offset=add_offset, stats=stats)
                for i in range(len(raw))]
    return torch.cat([p.x for p in prepared]), prepared[0]


def check_plausible(model: SlimModel, scene: Scene, x: torch.Tensor, whole: np.ndarray, check: str, inputs: dict
                    ) -> str:
    """``run``'s plausibility check (:func:`slimkern.checks.check_plausible`) on the chips of ``x`` without nodata
    (``whole``); the other checks are ``run``'s own. Returns the check mode for the next batch (``"warn"`` warns
    once per scene, then stops checking)."""
    if check == "off" or not whole.any():
        return check
    full = x[torch.from_numpy(whole).to(x.device)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputCheckWarning)
        try:
            checks.check_plausible(model, full, inputs, check)
        except ValueError as err:
            raise SceneError(f"scene {scene.id}: {err}. For a scene: give the pixels' units (units=, --units; "
                             "add_offset= for Sentinel-2 processing baseline 04.00+) or check='warn'/'off' "
                             "(--check)") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return "off" if any(issubclass(w.category, InputCheckWarning) for w in caught) else check
