"""``InputSpec``: the preprocessing contract of one checkpoint, typed, with the source of every fact.

A spec says what raw data a checkpoint was pretrained on and how that data became its input tensor:

- bands in order (canonical names, :mod:`slimkern.bands`), the sensor, centre wavelengths (a named table);
- units: the raw ``unit`` (``"DN"``: the product's stored integers, e.g. Sentinel-2 reflectance x 10000 or 8-bit
  pixels; ``"dB"``: SAR backscatter; ``"any"``: any linear unit, for data-dependent normalisations), the DN per
  unit reflectance (``quantification``), and ``model units = (DN + offset) * scale``;
- the normalisation applied after scaling (``NORMALIZATIONS``) with its statistics (``mean``/``std``);
- native image size, patch size, GSD (metres), frames and the pretraining data set;
- named choices where upstream implementations disagree (:class:`Choice`), each option with its source.

:meth:`slimkern.SlimModel.prepare` turns raw data into the model's input by this contract, and the input check of
:meth:`~slimkern.SlimModel.run` tests a batch against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Kinds of source a fact may cite.
SOURCE_KINDS = ("paper", "readme", "config", "code", "docs")
UNITS = ("DN", "dB", "any")
#: What each normalisation does to values already in model units.
NORMALIZATIONS = {
    "standardize": "(x - mean) / std per band, with the pretraining statistics",
    "sentinel_normalize": "SatMAE's SentinelNormalize: clip((x - (mean - 2 std)) / (4 std) * 255, 0, 255) truncated "
                          "to 8 bits, then / 255",
    "batch_rescale": "CROMA's rescale from the batch's own per-band statistics: clip((x - (m - 2 s)) / (4 s), 0, 1), "
                     "8-bit quantised",
    "dataset": "(x - mean) / std per band with the statistics of the user's own data set (prepare(stats=...)), "
               "else of the batch",
}
#: Facts every spec cites a source for (the wavelength table carries its own).
CITED = ("sensor", "bands", "units", "normalization", "image_size", "patch_size", "gsd_m", "frames",
         "pretraining_data")


@dataclass(frozen=True)
class Source:
    """Where a fact comes from: ``kind`` (paper, readme, config, code, docs) and ``ref`` (URL or repo@commit path)."""

    kind: str
    ref: str

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS or not self.ref:
            raise ValueError(f"a source needs a kind in {SOURCE_KINDS} and a reference, got {self!r}")

    def __str__(self) -> str:
        return f"{self.kind}: {self.ref}"


@dataclass(frozen=True)
class WavelengthTable:
    """Centre wavelengths (micrometres) and, where known, bandwidths (nanometres) per canonical band name."""

    name: str
    source: Source
    um: tuple[tuple[str, float], ...]
    bandwidth_nm: tuple[tuple[str, float], ...] = ()

    def wavelength(self, band: str) -> float | None:
        return dict(self.um).get(band)

    def bandwidth(self, band: str) -> float | None:
        return dict(self.bandwidth_nm).get(band)

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(band for band, _ in self.um)


@dataclass(frozen=True)
class Option:
    """One way upstream code does something: its source, what it does, and what it sets (architecture fields of
    the model, or the wavelength table that ``prepare`` and ``run``'s defaults use)."""

    name: str
    source: Source
    effect: str
    arch: tuple[tuple[str, Any], ...] = ()
    wavelengths: WavelengthTable | None = None


@dataclass(frozen=True)
class Choice:
    """A named default that upstream implementations disagree on; ``value`` is the option in use."""

    name: str
    value: str
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if self.value not in names or len(set(names)) != len(names):
            raise ValueError(f"choice {self.name!r}: value {self.value!r} must be one of the distinct options {names}")

    @property
    def selected(self) -> Option:
        return next(o for o in self.options if o.name == self.value)


@dataclass(frozen=True)
class InputSpec:
    """The typed preprocessing contract of one checkpoint (see the module doc).

    ``band_sets`` lists the band sets the model accepts, largest first (CROMA: optical + radar, optical, radar);
    empty means exactly ``bands``. ``any_bands`` marks wavelength-conditioned models, which take any subset of the
    bands their wavelength table knows (and SAR bands by polarisation name where ``sar_by_name``). ``mean`` and
    ``std`` are ``None`` for data-dependent normalisations; ``gsd_m`` is ``None`` where the pretraining GSD varies
    per image or the data are not geospatial.
    """

    sensor: str
    bands: tuple[str, ...]
    wavelengths: WavelengthTable
    unit: str
    quantification: float
    scale: float
    offset: float
    normalization: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    image_size: int
    patch_size: int
    gsd_m: float | None
    frames: int
    pretraining_data: str
    sources: tuple[tuple[str, Source], ...]
    band_sets: tuple[tuple[str, ...], ...] = ()
    any_bands: bool = False
    sar_by_name: bool = False
    choices: tuple[Choice, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.unit not in UNITS:
            problems.append(f"unit {self.unit!r} not in {UNITS}")
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization {self.normalization!r} not in {tuple(NORMALIZATIONS)}")
        fixed = self.normalization in ("standardize", "sentinel_normalize")
        if fixed != (self.mean is not None and self.std is not None):
            problems.append(f"{self.normalization} needs mean and std" if fixed else
                            f"{self.normalization} takes its statistics from the data: mean and std must be None")
        if self.mean is not None and not len(self.bands) == len(self.mean) == len(self.std):
            problems.append("bands, mean and std need one entry per band")
        if self.std is not None and min(self.std) <= 0:
            problems.append("std must be positive")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            problems.append(f"bands must be distinct names, got {self.bands}")
        outside = sorted({b for s in self.band_sets for b in s} - set(self.bands))
        if outside:
            problems.append(f"band_sets use bands {outside} that are not in bands")
        missing = [f for f in CITED if f not in dict(self.sources)]
        if missing:
            problems.append(f"no source for {', '.join(missing)}")
        if self.quantification <= 0 or self.scale <= 0 or self.image_size % self.patch_size or self.frames < 1:
            problems.append("quantification and scale must be positive, image_size a multiple of patch_size, "
                            "frames >= 1")
        if problems:
            raise ValueError(f"InputSpec ({self.pretraining_data}): " + "; ".join(problems))

    # -- facts per band ------------------------------------------------------------------------------
    @property
    def wavelengths_um(self) -> tuple[float | None, ...]:
        """Centre wavelength of each band in micrometres (``None`` for radar bands)."""
        return tuple(self.wavelengths.wavelength(b) for b in self.bands)

    @property
    def bandwidths_nm(self) -> tuple[float | None, ...]:
        return tuple(self.wavelengths.bandwidth(b) for b in self.bands)

    @property
    def accepted_band_sets(self) -> tuple[tuple[str, ...], ...]:
        return self.band_sets or (self.bands,)

    def source(self, fact: str) -> Source:
        """The source of ``fact`` (one of :data:`CITED`, or ``"wavelengths"``)."""
        if fact == "wavelengths":
            return self.wavelengths.source
        return dict(self.sources)[fact]

    # -- named choices -------------------------------------------------------------------------------
    def choice(self, name: str) -> Choice:
        for choice in self.choices:
            if choice.name == name:
                return choice
        raise KeyError(name)

    def choose(self, **picks: str) -> InputSpec:
        """This spec with the named choices set (``spec.choose(wavelength_table="esa")``)."""
        known = {c.name: c for c in self.choices}
        unknown = sorted(set(picks) - set(known))
        if unknown:
            offered = ", ".join(f"{c.name} ({'|'.join(o.name for o in c.options)})" for c in self.choices) or "none"
            raise ValueError(f"unknown choice {', '.join(unknown)}; this model's choices: {offered}")
        choices, table = [], self.wavelengths
        for choice in self.choices:
            value = picks.get(choice.name, choice.value)
            if value not in [o.name for o in choice.options]:
                raise ValueError(f"{choice.name}={value!r} is not an option; choose one of "
                                 f"{', '.join(o.name for o in choice.options)}")
            choice = dataclasses.replace(choice, value=value)
            table = choice.selected.wavelengths or table
            choices.append(choice)
        return dataclasses.replace(self, choices=tuple(choices), wavelengths=table)

    def arch_overrides(self) -> dict[str, Any]:
        """Architecture fields the chosen options set."""
        return {k: v for c in self.choices for k, v in c.selected.arch}

    # -- reporting -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``slimkern info NAME --json``, ``GET /v1/models``, provenance)."""
        return {
            "sensor": self.sensor, "bands": list(self.bands), "band_sets": [list(s) for s in self.accepted_band_sets],
            "any_bands": self.any_bands, "sar_by_name": self.sar_by_name, "wavelength_table": self.wavelengths.name,
            "wavelengths_um": list(self.wavelengths_um), "bandwidths_nm": list(self.bandwidths_nm),
            "unit": self.unit, "quantification": self.quantification, "scale": self.scale, "offset": self.offset,
            "normalization": self.normalization, "normalization_formula": NORMALIZATIONS[self.normalization],
            "mean": None if self.mean is None else list(self.mean), "std": None if self.std is None else list(self.std),
            "image_size": self.image_size, "patch_size": self.patch_size, "gsd_m": self.gsd_m, "frames": self.frames,
            "pretraining_data": self.pretraining_data,
            "sources": {**{k: str(v) for k, v in self.sources}, "wavelengths": str(self.wavelengths.source)},
            "choices": {c.name: {"value": c.value, "options": {o.name: {"effect": o.effect, "source": str(o.source)}
                                                                for o in c.options}} for c in self.choices},
        }


def cite(**facts: Source) -> tuple[tuple[str, Source], ...]:
    """``sources=cite(bands=..., units=...)``: the spec's per-fact sources as a sorted tuple."""
    return tuple(sorted(facts.items()))
