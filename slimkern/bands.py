"""Band vocabulary: canonical band names per sensor, the one alias table, and centre-wavelength tables.

Canonical names: Sentinel-2 ``B01`` ... ``B12`` and ``B8A``; HLS ``BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2``
(TerraTorch's names); 8-bit RGB ``R, G, B``; SAR polarisations ``VV, VH, HH, HV``. Every optical band also has
STAC ``eo:common_name`` names (``red``, ``nir``, ``nir08``, ``swir16``, ...): :func:`resolve_band` maps what a user
writes (``B8``, ``b08``, ``red``, ``nir``, an HLS S30 file's ``B8A``, ...) to the canonical band of one model.

A wavelength table names its source: the tables that upstream libraries disagree on (DOFA's README vs
TerraTorch vs ESA, Copernicus-Bench vs ESA) are kept side by side, and a model's
:class:`~slimkern.spec.InputSpec` says which one it uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .spec import Source, WavelengthTable

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Sentinel-2 L2A has no cirrus band (B10).
S2_L2A_BANDS = tuple(b for b in S2_BANDS if b != "B10")
HLS_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
RGB_BANDS = ("R", "G", "B")
SAR_BANDS = ("VV", "VH", "HH", "HV")

#: Accepted common names per canonical band; the first is the band's own (STAC ``eo:common_name``). Another
#: sensor's band name maps through that first name only (S2 ``B8A`` -> ``nir08`` -> HLS ``NIR_NARROW``; S2 ``B08``,
#: the broad NIR band, has no HLS counterpart), while a common name the user writes maps through all of them
#: (``nir`` is ``B08`` for Sentinel-2 and ``NIR_NARROW``, the only NIR band, for HLS).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "B01": ("coastal", "aerosol"), "B02": ("blue",), "B03": ("green",), "B04": ("red",),
    "B05": ("rededge071", "rededge1"), "B06": ("rededge075", "rededge2"), "B07": ("rededge078", "rededge3"),
    "B08": ("nir",), "B8A": ("nir08", "nirnarrow"), "B09": ("nir09", "watervapour", "watervapor"),
    "B10": ("cirrus",), "B11": ("swir16", "swir1"), "B12": ("swir22", "swir2"),
    "BLUE": ("blue",), "GREEN": ("green",), "RED": ("red",), "NIR_NARROW": ("nir08", "nir", "nirnarrow"),
    "SWIR_1": ("swir16", "swir1"), "SWIR_2": ("swir22", "swir2"),
    "R": ("red",), "G": ("green",), "B": ("blue",),
}
_ALL_CANONICAL = (*S2_BANDS, *HLS_BANDS, *RGB_BANDS, *SAR_BANDS)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.lower())


def _sentinel2(key: str) -> str | None:
    """``b4``, ``b04``, ``b8a``, ``b08a`` -> the canonical Sentinel-2 name (``B04``, ``B8A``)."""
    match = re.fullmatch(r"b0?(\d{1,2})(a?)", key)
    if not match:
        return None
    number, a = int(match.group(1)), match.group(2)
    name = "B8A" if (number, a) == (8, "a") else f"B{number:02d}" if not a else None
    return name if name in S2_BANDS else None


def resolve_band(name: str, targets: Sequence[str]) -> str | None:
    """The band of ``targets`` (a model's canonical bands) that ``name`` denotes, or ``None``.

    >>> resolve_band("b8", S2_BANDS), resolve_band("nir", HLS_BANDS), resolve_band("B8A", HLS_BANDS)
    ('B08', 'NIR_NARROW', 'NIR_NARROW')
    """
    if not isinstance(name, str):
        raise TypeError(f"band names must be strings, got {name!r}")
    key = _key(name)
    s2 = _sentinel2(key)
    for target in targets:
        if _key(target) == key or target == s2:
            return target
    for target in targets:
        if key in map(_key, COMMON_NAMES.get(target, ())):
            return target
    other = s2 or next((b for b in _ALL_CANONICAL if _key(b) == key), None)
    if other in COMMON_NAMES:
        own = COMMON_NAMES[other][0]
        for target in targets:
            if COMMON_NAMES.get(target, ("",))[0] == own:
                return target
    return None


def resolve_bands(names: Iterable[str], targets: Sequence[str]) -> list[str | None]:
    """:func:`resolve_band` for every name; two names that denote the same band are an error."""
    resolved = [resolve_band(n, targets) for n in names]
    seen: dict[str, str] = {}
    for name, band in zip(names, resolved, strict=True):
        if band is not None and band in seen:
            raise ValueError(f"bands {seen[band]!r} and {name!r} both denote {band}; name each band once")
        if band is not None:
            seen[band] = name
    return resolved


def _table(name: str, source: Source, bands: Sequence[str], um: Sequence[float],
           bandwidth_nm: Sequence[float] = ()) -> WavelengthTable:
    return WavelengthTable(name, source, tuple(zip(bands, um, strict=True)),
                           tuple(zip(bands, bandwidth_nm, strict=True)) if bandwidth_nm else ())


_ESA_NM = (443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190)
_ESA_BANDWIDTH_NM = (20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 30, 90, 180)
#: ESA's rounded Sentinel-2 MSI centre wavelengths and bandwidths (the Sentinel-2 User Handbook's band table).
ESA_S2 = _table("esa", Source("docs", "ESA Sentinel-2 User Handbook, MSI band table (as listed by GDAL: "
                              "https://gdal.org/en/stable/drivers/raster/sentinel2.html)"),
                S2_BANDS, [nm / 1000 for nm in _ESA_NM], [float(w) for w in _ESA_BANDWIDTH_NM])

#: HLS bands: the middle of each Landsat-8/9 OLI bandpass, which HLS harmonises Sentinel-2 (S30) to.
HLS_OLI = _table("hls", Source("docs", "USGS Landsat 8-9 OLI band designations "
                               "(https://www.usgs.gov/faqs/what-are-band-designations-landsat-satellites); HLS v2.0 "
                               "User Guide (https://lpdaac.usgs.gov/documents/1698/HLS_User_Guide_V2.pdf)"),
                 HLS_BANDS, (0.48, 0.56, 0.655, 0.865, 1.61, 2.2))

_DOFA_README = Source("readme", "https://github.com/zhu-xlab/DOFA README (wavelength examples: Sentinel-2 9 bands, "
                                "Sentinel-1 5.405, RGB)")
#: DOFA's README values (9 Sentinel-2 bands, Sentinel-1, RGB); B01, B8A and B09, not in its examples, from
#: TerraTorch's table.
DOFA_README = WavelengthTable(
    "dofa", _DOFA_README,
    (("B01", 0.44), ("B02", 0.49), ("B03", 0.56), ("B04", 0.665), ("B05", 0.705), ("B06", 0.74), ("B07", 0.783),
     ("B08", 0.842), ("B8A", 0.864), ("B09", 0.945), ("B11", 1.61), ("B12", 2.19), ("VV", 5.405), ("VH", 5.405),
     ("R", 0.665), ("G", 0.56), ("B", 0.49)))
#: TerraTorch's DOFA band -> wavelength table.
TERRATORCH_DOFA = WavelengthTable(
    "terratorch", Source("code", "IBM/terratorch@85467a9f terratorch/models/backbones/dofa_vit.py (wavelength table)"),
    (("B01", 0.44), ("B02", 0.49), ("B03", 0.56), ("B04", 0.665), ("B05", 0.705), ("B06", 0.74), ("B07", 0.783),
     ("B08", 0.832), ("B8A", 0.864), ("B09", 0.945), ("B10", 1.373), ("B11", 1.61), ("B12", 2.2), ("VV", 5.405),
     ("VH", 5.405)))
#: Copernicus-Bench's Sentinel-2 configs (what Copernicus-FM was evaluated with): 440/860/940 nm where ESA says
#: 443/865/945.
COPERNICUS_BENCH_S2 = _table(
    "copernicus_fm", Source("config", "zhu-xlab/Copernicus-FM@5d8535f3 Copernicus-Bench/src/configs/dataset/"
                                      "cobench_bigearthnet_s2.yaml (band_wavelengths, band_bandwidths)"),
    S2_L2A_BANDS, (0.44, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.86, 0.94, 1.61, 2.19),
    (20.0, 65.0, 35.0, 30.0, 15.0, 15.0, 20.0, 115.0, 20.0, 20.0, 90.0, 180.0))
#: Nominal visible wavelengths of an RGB camera (DOFA's README RGB example).
RGB_NOMINAL = _table("rgb", _DOFA_README, RGB_BANDS, (0.665, 0.56, 0.49))
#: Radar bands have no optical wavelength (C-band SAR: about 5.5 cm).
SAR_NONE = WavelengthTable("sar", Source("docs", "https://sentiwiki.copernicus.eu/web/s1-mission (C-band SAR)"), ())


def merged(name: str, *tables: WavelengthTable) -> WavelengthTable:
    """One table holding the bands of several (e.g. optical + radar), the first table's source."""
    return WavelengthTable(name, tables[0].source, tuple(p for t in tables for p in t.um),
                           tuple(p for t in tables for p in t.bandwidth_nm))
