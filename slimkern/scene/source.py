"""Scenes on disk: one multi-band raster, or one file per band stacked by band name; read by windows.

A scene is opened and checked once (:func:`open_scene`: readable, georeferenced, band names, one grid), then
read window by window (:class:`SceneReader`, one set of file handles per thread: GDAL handles are not
thread-safe). Nothing reads the whole scene.

- **One file** (GeoTIFF, COG, JP2, VRT, anything GDAL opens): band names are ``bands=`` (the file's bands in
  order), else the file's band descriptions, else none (the model's band order is then assumed).
- **One file per band**: a mapping ``{band name: path}``, or a folder of files named like Sentinel-2's
  (``..._B04.jp2``, ``..._B04_10m.jp2`` or ``.tif``; a SAFE folder works, the finest resolution of each band
  is taken). The finest file defines the grid; files of another resolution covering the same extent in the
  same CRS are resampled to it (bilinear, by a GDAL warped VRT).
- **Validity**: a pixel is nodata where any band is masked (its nodata value, an alpha or mask band), NaN,
  or outside the scene (chips reaching past the edge).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

#: Per-band file names as Sentinel-2 writes them (``T32TQM_20230101T101031_B04_10m.jp2``) or per-band COGs.
BAND_FILE = re.compile(r"(?:^|[_.-])(B\d{2}|B8A)(?:_(\d+)m)?\.(?:jp2|tiff?)$", re.IGNORECASE)


class SceneError(ValueError):
    """A scene that cannot be read or does not fit the job (named file, what is wrong, what is expected)."""


@dataclass(frozen=True)
class BandFile:
    """One file of a scene and the bands taken from it (1-based indexes), warped to the grid if ``warp``."""

    path: str
    indexes: tuple[int, ...]
    warp: bool = False


@dataclass(frozen=True)
class Scene:
    """An opened, checked scene: its files, band names (``None``: unnamed) and pixel grid."""

    id: str
    files: tuple[BandFile, ...]
    band_names: tuple[str, ...] | None
    crs: rasterio.crs.CRS
    transform: rasterio.Affine
    height: int
    width: int

    @property
    def count(self) -> int:
        return sum(len(f.indexes) for f in self.files)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)


def open_scene(source: str | Path | Mapping[str, str | Path] | Scene, bands: Sequence[str] | None = None,
               scene_id: str | None = None) -> Scene:
    """Open and check a scene (see the module docstring); nothing is read but the headers.

    Args:
        source: a raster file, a folder of per-band files, or ``{band name: path}``.
        bands: names of a single file's bands, in file order (e.g. ``("B04", "B03", "B02", "B08")``).
        scene_id: the scene's name in outputs (default: the file or folder name without suffix).

    Raises:
        SceneError: missing, unreadable or corrupt file, no CRS or geotransform, band names that do not fit
            the file, per-band files in different CRSs or extents.
    """
    if isinstance(source, Scene):
        return source
    if isinstance(source, Mapping):
        if bands is not None:
            raise SceneError("a {band: path} scene names its bands by its keys; do not also pass bands=")
        if not source:
            raise SceneError("a {band: path} scene needs at least one band")
        return _stack({str(k): str(v) for k, v in source.items()}, scene_id or common_stem(source.values()))
    path = Path(source)
    if path.is_dir():
        if bands is not None:
            raise SceneError(f"{path}: a folder of per-band files takes its band names from the file names; "
                             "do not also pass bands=")
        return _stack(band_files(path), scene_id or path.name.split(".")[0])
    info = _header(str(path))
    count = info["count"]
    if bands is not None:
        bands = tuple(str(b) for b in bands)
        if len(bands) != count:
            raise SceneError(f"{path}: {len(bands)} band names given ({', '.join(bands)}) for a file with "
                             f"{count} bands; name every band of the file, in file order")
    else:
        described = info["descriptions"]
        bands = tuple(described) if all(described) and len(set(described)) == count else None
    _check_unique(bands, str(path))
    return Scene(id=scene_id or path.name.split(".")[0], files=(BandFile(str(path), tuple(range(1, count + 1))),),
                 band_names=bands, **info["grid"])


def band_files(folder: Path) -> dict[str, str]:
    """``{band: path}`` of the per-band files under ``folder`` (any depth), the finest resolution per band."""
    found: dict[str, tuple[int, str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        match = BAND_FILE.search(path.name)
        if match:
            band, metres = match.group(1).upper(), int(match.group(2) or 0)
            if band not in found or metres < found[band][0]:
                found[band] = (metres, str(path))
    if not found:
        raise SceneError(f"{folder}: no per-band files found (expected names like T32TQM_..._B04_10m.jp2 or "
                         "scene_B04.tif)")
    return {band: path for band, (_, path) in sorted(found.items())}


def _stack(paths: dict[str, str], scene_id: str) -> Scene:
    headers = {band: _header(path) for band, path in paths.items()}
    for band, info in headers.items():
        if info["count"] != 1:
            raise SceneError(f"{paths[band]}: a per-band file for {band} has {info['count']} bands; expected 1")
    crs = {info["grid"]["crs"] for info in headers.values()}
    if len(crs) > 1:
        raise SceneError(f"per-band files of scene {scene_id!r} are in different CRSs: "
                         + "; ".join(f"{b}: {h['grid']['crs']}" for b, h in headers.items())
                         + ". Reproject them to one CRS first (gdalwarp -t_srs)")
    ref = min(headers.values(), key=lambda h: abs(h["grid"]["transform"].a))["grid"]
    files = []
    for band, info in headers.items():
        grid = info["grid"]
        same = grid["transform"].almost_equals(ref["transform"]) and (grid["height"], grid["width"]) == (
            ref["height"], ref["width"])
        if not same and not _same_extent(grid, ref):
            raise SceneError(f"{paths[band]} ({band}) does not cover the scene's extent "
                             f"{_bounds(ref)} (it covers {_bounds(grid)}); per-band files must cover one area")
        files.append(BandFile(paths[band], (1,), warp=not same))
    return Scene(id=scene_id, files=tuple(files), band_names=tuple(paths), **ref)


def _header(path: str) -> dict:
    if not Path(path).is_file() and "://" not in path and not path.startswith("/vsi"):
        raise SceneError(f"scene file not found: {path}")
    try:
        with rasterio.open(path) as src:
            crs, transform = src.crs, src.transform
            info = {"count": src.count, "descriptions": src.descriptions,
                    "grid": {"crs": crs, "transform": transform, "height": src.height, "width": src.width}}
    except RasterioError as err:
        raise SceneError(f"cannot open {path} as a raster ({err}); is it a complete GeoTIFF/COG/JP2 file?") from None
    if crs is None:
        raise SceneError(f"{path} has no CRS, so its embeddings could not be placed on the map; set it "
                         "(gdal_edit.py -a_srs EPSG:XXXX, or rio edit-info --crs EPSG:XXXX)")
    if transform.is_identity:
        raise SceneError(f"{path} has no geotransform (pixel size and origin); set it (gdal_edit.py -a_ullr)")
    return info


def _check_unique(bands: tuple[str, ...] | None, where: str) -> None:
    if bands is not None and len(set(bands)) != len(bands):
        raise SceneError(f"{where}: band names must be unique, got {', '.join(bands)}")


def _bounds(grid: dict) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in rasterio.transform.array_bounds(grid["height"], grid["width"], grid["transform"]))


def _same_extent(grid: dict, ref: dict) -> bool:
    tolerance = max(abs(grid["transform"].a), abs(grid["transform"].e))  # one pixel of the coarser file
    return all(abs(a - b) <= tolerance for a, b in zip(_bounds(grid), _bounds(ref), strict=True))


def common_stem(paths) -> str:
    """The shared start of the file names, cut at a separator (``S1_VV.tif``, ``S1_VH.tif`` -> ``S1``)."""
    stems = [Path(p).name.split(".")[0] for p in paths]
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    if prefix not in stems:  # cut a partial name back to the last separator
        prefix = re.split(r"[_.-](?=[^_.-]*$)", prefix)[0] if re.search(r"[_.-]", prefix) else prefix
    return prefix.rstrip("_-.") or "scene"


class SceneReader:
    """Reads windows of a scene; each thread gets its own file handles (closed by :meth:`close`)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self._local = threading.local()
        self._opened: list = []
        self._lock = threading.Lock()

    def _handles(self) -> list:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = []
            s = self.scene
            for f in s.files:
                src = rasterio.open(f.path)
                handle = src
                if f.warp:
                    handle = WarpedVRT(src, crs=s.crs, transform=s.transform, width=s.width, height=s.height,
                                       resampling=Resampling.bilinear)
                handles.append(handle)
                with self._lock:
                    self._opened += [handle, src] if handle is not src else [src]
            self._local.handles = handles
        return handles

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``[C, height, width]`` (float32, 0 where invalid) and validity ``[height, width]`` (bool) of the
        window at ``(row, col)``; parts outside the scene are invalid."""
        s = self.scene
        data = np.zeros((s.count, height, width), np.float32)
        valid = np.zeros((height, width), bool)
        r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + height, s.height), min(col + width, s.width)
        if r0 >= r1 or c0 >= c1:
            return data, valid
        window = Window(c0, r0, c1 - c0, r1 - r0)
        inside = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        ok = np.ones((r1 - r0, c1 - c0), bool)
        band = 0
        for f, handle in zip(s.files, self._handles(), strict=True):
            try:
                pixels = handle.read(f.indexes, window=window)
                for i, index in enumerate(f.indexes):
                    ok &= self._band_valid(handle, index, pixels[i], window)
            except RasterioError as err:
                raise SceneError(f"{f.path}: reading rows {r0}-{r1}, columns {c0}-{c1} failed ({err}); the file "
                                 "may be truncated or corrupt") from None
            data[(slice(band, band + len(f.indexes)), *inside)] = pixels
            band += len(f.indexes)
        ok &= np.isfinite(data[(slice(None), *inside)]).all(axis=0)
        valid[inside] = ok
        data[:, ~valid] = 0  # NaN, nodata values and padding never reach the model
        return data, valid

    @staticmethod
    def _band_valid(handle, index: int, pixels: np.ndarray, window: Window) -> np.ndarray:
        flags = handle.mask_flag_enums[index - 1]
        if MaskFlags.all_valid in flags:
            return np.ones(pixels.shape, bool)
        nodata = handle.nodatavals[index - 1]
        if flags == [MaskFlags.nodata] and nodata is not None:  # the common case, without a second read
            return ~np.isnan(pixels) if np.isnan(nodata) else pixels != nodata
        return handle.read_masks(index, window=window) > 0

    def close(self) -> None:
        with self._lock:
            for handle in self._opened:
                handle.close()
            self._opened.clear()
        self._local = threading.local()
