"""Scene pixels -> model input: the one place where the scene pipeline selects, scales and normalises bands.

Interim adapter until the preprocessing contract (``model.prepare``, issue 15) is on main; it is then
replaced by a call to ``model.prepare`` with the same arguments. Until then: bands are matched to the model's
``cfg.bands`` by exact name (no alias table), brought to model units as the spec says (``(DN + offset) * scale``)
and normalised by ``model.normalize``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model import SlimModel


def prepare_chips(model: SlimModel, raw: torch.Tensor, bands: Sequence[str] | None, units: str | None = None
                  ) -> tuple[torch.Tensor, dict]:
    """Raw chips ``[B, C, H, W]`` (bands named ``bands`` in order, or the model's order when ``None``) -> the
    normalised input of ``model.run`` on the model's device and dtype, and the extra ``run`` inputs.

    Raises:
        ValueError: bands missing or unnamed with another count than the model's (the message lists both).
    """
    cfg = model.cfg
    if units is not None:
        raise ValueError(f"units={units!r}: unit conversion comes with the preprocessing contract "
                         f"(model.prepare); give pixels in the spec's unit ({model.spec.unit}) for now")
    if bands is None:
        if raw.shape[1] != len(cfg.bands):
            raise ValueError(f"the scene has {raw.shape[1]} unnamed bands but {cfg.name} expects {len(cfg.bands)} "
                             f"({', '.join(cfg.bands)}); name the scene's bands (bands=/--bands, band "
                             "descriptions or per-band files) so they can be selected")
    else:
        missing = [b for b in cfg.bands if b not in bands]
        if missing:
            raise ValueError(f"{cfg.name} needs bands {', '.join(cfg.bands)}; the scene lacks {', '.join(missing)} "
                             f"(it has {', '.join(bands)})")
        raw = raw[:, [list(bands).index(b) for b in cfg.bands]]
    x = raw.to(model.device, torch.float64 if model.dtype == torch.float64 else torch.float32)
    spec = model.spec
    return model.normalize((x + spec.offset) * spec.scale).to(model.dtype), {}
