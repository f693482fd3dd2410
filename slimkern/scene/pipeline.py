"""``embed_scene``: stream a scene from disk through the model at one width and into a COG or GeoParquet file.

Reader threads read blocks of chips (one window read per block and file) ahead of the model, at most
``prefetch`` blocks ahead; the model runs each block's chips in batches of at most ``batch_size``; a writer
thread stores each finished block (:mod:`.partial`), and the output file is built from the blocks at the end
(:mod:`.cog`, :mod:`.geoparquet`). Memory is bounded by the batch, the prefetch depth and GDAL's block cache,
not by the scene.

Chips go through the model's preprocessing contract (``model.prepare``) one chip at a time (:mod:`.prepare`).
Chips without any valid pixel are not run and are written as nodata (NaN in the COG, no row in GeoParquet).
In partial chips the nodata pixels are *filled* with the mean of the chip's valid pixels before ``prepare``;
the model sees them as a featureless area, so the embedding of a partial chip mixes the data with that fill;
``valid_fraction`` (GeoParquet) says how much of the chip or patch was data, and in ``per="patch"`` output
patches without data are nodata. Every output file carries ``model.provenance(...)`` of the run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import torch

from .. import __version__
from ..input_check import check_mode as check_check
from ..model import SlimModel
from ..plan import check_mode, check_width
from ..prepare import Prepared
from .cog import read_metadata as read_cog_metadata
from .cog import write_cog
from .geoparquet import read_metadata as read_parquet_metadata
from .geoparquet import write_geoparquet
from .grid import ChipGrid
from .partial import PartialOutput
from .prepare import check_plausible, fill_nodata, prepare_chips, scene_bands
from .source import Scene, SceneError, SceneReader, open_scene

DTYPES = {"float32": np.float32, "float16": np.float16}
FORMATS = {".tif": (write_cog, read_cog_metadata), ".tiff": (write_cog, read_cog_metadata),
           ".parquet": (write_geoparquet, read_parquet_metadata)}
GDAL_CACHE_BYTES = 64 << 20  # GDAL's block cache would otherwise grow to 5 % of the RAM with the scene


@dataclasses.dataclass
class SceneResult:
    """What :func:`embed_scene` did. ``seconds``: ``read`` (reader threads, summed), ``wait`` (the model waiting
    for data), ``model`` (preparation and forward passes), ``write`` (storing blocks), ``finalize`` (building the
    output file) and ``total`` (wall clock)."""

    scene: str
    out: Path
    chips: int
    embedded: int
    skipped: int
    resumed_blocks: int
    relative_flops: float
    seconds: dict[str, float]
    already_done: bool = False

    @property
    def chips_per_s(self) -> float:
        """Chips (embedded or skipped as nodata) per second of wall clock, output file included."""
        return (self.embedded + self.skipped) / max(self.seconds.get("total", 0.0), 1e-9)


def embed_scene(model: SlimModel, scene: str | Path | dict | Scene, width: float = 1.0, *, out: str | Path,
                per: str = "chip", crop: int | None = None, stride: int | None = None,
                bands: list[str] | tuple[str, ...] | None = None, units: str | None = None, add_offset: float = 0.0,
                stats=None, check: str = "error", mode: str = "attn+ffn", dtype: str = "float32",
                batch_size: int = 32, readers: int = 2, prefetch: int = 2,
                block: int | None = None, scene_id: str | None = None, overwrite: bool = False,
                progress: bool = True) -> SceneResult:
    """Embed a whole scene at ``width`` and write it to ``out`` (``.tif``: COG, ``.parquet``: GeoParquet).

    Args:
        model: a loaded model (:func:`slimkern.load`).
        scene: a raster file, a folder of per-band files, ``{band: path}`` or an opened :class:`Scene`.
        width: slimming factor in (0, 1] (the compute knob: ~``width`` of the block FLOPs).
        out: output file; ``OUT.partial/`` next to it holds the finished blocks until it is complete.
        per: ``"chip"`` (the pooled embedding of each chip) or ``"patch"`` (token embeddings on the patch grid).
        crop, stride: chip size and step in pixels (TerraTorch's names; default: the model's input size, no
            overlap). See :mod:`slimkern.scene.grid` for how overlap is handled.
        bands: names of a single-file scene's bands in file order (else its band descriptions); the model's
            bands are selected from them by name (``model.prepare``).
        units, add_offset, stats: what the pixels are, as :meth:`SlimModel.prepare` takes them (``units``: ``"DN"``,
            ``"reflectance"``, ...; default: the model's unit).
        check: ``run``'s input plausibility check (``"error"``, ``"warn"``, ``"off"``), on chips without nodata.
        mode: slimming mode (``"attn+ffn"``, ``"attn"``, ``"ffn"``).
        dtype: ``"float32"`` or ``"float16"`` output values.
        batch_size: chips per forward pass; readers: reader threads; prefetch: blocks read ahead.
        block: block side in chips (default: enough for one batch); the unit of resuming.
        scene_id: the scene's name in the output (default: the file name).
        overwrite: replace an existing output or another job's unfinished one.
        progress: show a progress bar (chips/s).

    Raises:
        SceneError: the scene (unreadable, truncated, no CRS, band names, bands or units ``model.prepare`` refuses,
        values the plausibility check refuses); ValueError: options that do not fit the model; an existing output
        of another job without ``overwrite``.
    """
    started = time.perf_counter()
    check_width(width)
    check_mode(mode)
    check_check(check)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"out must end in .tif/.tiff (Cloud-Optimized GeoTIFF) or .parquet (GeoParquet); got {out}")
    for name, value in (("batch_size", batch_size), ("readers", readers), ("prefetch", prefetch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if 4 not in model.input_ranks:
        raise ValueError(f"{model.cfg.name} takes [B, C, T, H, W] input; scene embedding runs single-date models")
    scene = open_scene(scene, bands, scene_id)
    if any(out.resolve() == Path(source).resolve() for source in scene.sources):
        raise ValueError(f"out {out} is one of the scene's own files; write the embeddings elsewhere")
    crop = crop or model.cfg.arch.img_size
    model.check_image_size(crop, crop)
    grid = ChipGrid(scene.height, scene.width, scene.transform, crop, stride or crop, model.cfg.arch.patch_size,
                    per, block or max(4, math.ceil(math.sqrt(batch_size))))
    prep = {"bands": scene_bands(model, scene), "units": units, "add_offset": add_offset, "stats": stats}
    dims, prepared = _check_model(model, scene, grid, width, mode, prep)
    prep["stats"] = None if stats is None else [[float(v) for v in values] for values in stats]
    relative_flops = model.relative_flops(width, mode=mode, image_size=crop)
    job = _job(model, scene, grid, width, mode, prep, dtype, batch_size, out.suffix.lower())
    partial = PartialOutput(out, job)
    write, read_metadata = FORMATS[out.suffix.lower()]
    result = SceneResult(scene.id, out, grid.chips, 0, 0, 0, relative_flops,
                         dict.fromkeys(("read", "wait", "model", "write", "finalize", "total"), 0.0))
    if out.exists() and not overwrite:
        if read_metadata(out).get("job") == partial.hash:
            result.already_done = True
            return result
        raise ValueError(f"{out} exists (from another job); pass overwrite=True (--overwrite) to replace it")
    done = partial.start(overwrite)
    result.resumed_blocks = len(done)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        _stream(model, scene, grid, partial, done, result, width=width, mode=mode, prep=prep, check=check,
                dims=dims, dtype=DTYPES[dtype], batch_size=batch_size, readers=readers, prefetch=prefetch,
                progress=progress)
        tick = time.perf_counter()
        metadata = {"provenance": model.provenance(width=float(width), mode=mode, prepared=prepared),
                    "scene": scene.id, "sources": list(scene.sources), "scene_bands": list(prep["bands"]),
                    "per": per, "crop": crop, "stride": grid.stride, "relative_flops": relative_flops,
                    "output_dtype": dtype, "weights": job["weights"], "job": partial.hash}
        partial.commit(lambda tmp: write(partial, grid, scene.crs, dims, dtype, metadata, tmp))
        result.seconds["finalize"] = time.perf_counter() - tick
    result.seconds["total"] = time.perf_counter() - started
    return result


def _check_model(model: SlimModel, scene: Scene, grid: ChipGrid, width: float, mode: str, prep: dict
                 ) -> tuple[int, Prepared]:
    """Bands, units and token layout checked before any work (on a made-up chip of positive values); returns the
    embedding dimension and the chip's :class:`~slimkern.Prepared` (the same for every chip: provenance)."""
    raw = np.random.default_rng(0).uniform(1, 100, (1, scene.count, grid.crop, grid.crop)).astype(np.float32)
    try:
        x, prepared = prepare_chips(model, raw, **prep)
    except ValueError as err:
        raise SceneError(f"scene {scene.id} ({', '.join(scene.sources)}): {err}") from None
    emb = model.run(x, width, mode=mode, output="pooled" if grid.per == "chip" else "tokens", check="off",
                    **prepared.inputs)
    if grid.per == "patch":
        side = grid.crop // grid.patch
        if emb.shape[1] != model.num_prefix_tokens + side * side:
            raise ValueError(f"{model.cfg.name} gives {emb.shape[1]} tokens for a {grid.crop} px chip, not "
                             f"{model.num_prefix_tokens} + {side}x{side} patches; use per='chip'")
    return int(emb.shape[-1]), prepared


_WEIGHT_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_fingerprint(model: SlimModel) -> str:
    """A hash of the model's parameters (cached per model while they are not modified in place)."""
    import hashlib

    versions = tuple(p._version for p in model.parameters())
    cached = _WEIGHT_HASHES.get(model)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    _WEIGHT_HASHES[model] = (versions, digest.hexdigest()[:16])
    return _WEIGHT_HASHES[model][1]


def _job(model: SlimModel, scene: Scene, grid: ChipGrid, width: float, mode: str, prep: dict, dtype: str,
         batch_size: int, suffix: str) -> dict:
    """Everything the output bytes depend on (resume refuses a job where any of it differs)."""
    files = []
    for path in scene.sources:
        stat = os.stat(path) if os.path.exists(path) else None
        files.append([os.path.abspath(path), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return {"model": model.cfg.name, "arch": repr(model.cfg.arch), "weights": weights_fingerprint(model),
            "dtype": str(model.dtype), "device": str(model.device), "backend": model.backend.name,
            "width": float(width), "mode": mode, "per": grid.per, "crop": grid.crop, "stride": grid.stride,
            "block": grid.block, "batch_size": batch_size, **prep, "scene": scene.id, "files": files,
            "output_dtype": dtype, "format": suffix, "slimkern": __version__, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _stream(model: SlimModel, scene: Scene, grid: ChipGrid, partial: PartialOutput, done: set[str],
            result: SceneResult, *, width: float, mode: str, prep: dict, check: str, dims: int, dtype,
            batch_size: int, readers: int, prefetch: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    todo = [b for b in grid.blocks() if b.name not in done]
    finished = grid.chips - sum(b.rows * b.cols for b in todo)
    reader = SceneReader(scene)
    seconds, lock = result.seconds, threading.Lock()
    checking = {"mode": check}  # "warn" turns "off" after the first warning

    def read(block):
        tick = time.perf_counter()
        row, col = grid.chip_window(block.row, block.col)
        span = ((block.rows - 1) * grid.stride + grid.crop, (block.cols - 1) * grid.stride + grid.crop)
        data = reader.read(row, col, *span)
        with lock:
            seconds["read"] += time.perf_counter() - tick
        return data

    def save(name, **arrays):
        tick = time.perf_counter()
        partial.save_block(name, **arrays)
        with lock:
            seconds["write"] += time.perf_counter() - tick

    bar = tqdm(total=grid.chips, initial=finished, unit="chip", desc=scene.id, disable=not progress, smoothing=0.1)
    queue: deque[tuple] = deque()
    writes: deque[Future] = deque()
    blocks = iter(todo)
    try:
        with ThreadPoolExecutor(readers, thread_name_prefix="scene-read") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="scene-write") as writer:
            for block in blocks:
                queue.append((block, pool.submit(read, block)))
                if len(queue) >= prefetch:
                    break
            while queue:
                block, future = queue.popleft()
                tick = time.perf_counter()
                data, valid = future.result()
                seconds["wait"] += time.perf_counter() - tick
                following = next(blocks, None)
                if following is not None:
                    queue.append((following, pool.submit(read, following)))
                tick = time.perf_counter()
                arrays, embedded = _embed_block(model, scene, grid, block, data, valid, width=width, mode=mode,
                                                prep=prep, checking=checking, dims=dims, dtype=dtype,
                                                batch_size=batch_size)
                seconds["model"] += time.perf_counter() - tick
                result.embedded += embedded
                result.skipped += block.rows * block.cols - embedded
                writes.append(writer.submit(save, block.name, **arrays))
                while len(writes) > 2 or (writes and writes[0].done()):
                    writes.popleft().result()  # raises a failed write here
                bar.update(block.rows * block.cols)
            while writes:
                writes.popleft().result()
    finally:
        bar.close()
        reader.close()


def _embed_block(model: SlimModel, scene: Scene, grid: ChipGrid, block, data: np.ndarray, valid: np.ndarray, *,
                 width: float, mode: str, prep: dict, checking: dict, dims: int, dtype, batch_size: int
                 ) -> tuple[dict[str, np.ndarray], int]:
    """Embeddings and valid fractions of one block's output window; the number of chips run."""
    crop, stride, patch = grid.crop, grid.stride, grid.patch
    chips = [(r, c) for r in range(block.rows) for c in range(block.cols)]
    fraction = {rc: float(valid[rc[0] * stride:rc[0] * stride + crop, rc[1] * stride:rc[1] * stride + crop].mean())
                for rc in chips}
    run = [rc for rc in chips if fraction[rc] > 0]
    emb = np.full((block.out_rows, block.out_cols, dims), np.nan, dtype)
    if grid.per == "chip":
        frac = np.array([fraction[rc] for rc in chips], np.float32).reshape(block.rows, block.cols)
    else:  # share of each output patch's pixels that are data
        y0, x0 = block.out_row * patch - block.row * stride, block.out_col * patch - block.col * stride
        cells = valid[y0:y0 + block.out_rows * patch, x0:x0 + block.out_cols * patch]
        frac = cells.reshape(block.out_rows, patch, block.out_cols, patch).mean((1, 3), dtype=np.float32)
    output_kind = "pooled" if grid.per == "chip" else "tokens"
    # batches split evenly within the block, so a resumed job runs exactly the same batches
    for part in np.array_split(np.arange(len(run)), math.ceil(len(run) / batch_size)) if run else ():
        batch = [run[i] for i in part]
        raw = np.stack([data[:, r * stride:r * stride + crop, c * stride:c * stride + crop] for r, c in batch])
        mask = np.stack([valid[r * stride:r * stride + crop, c * stride:c * stride + crop] for r, c in batch])
        x, prepared = prepare_chips(model, fill_nodata(raw, mask), **prep)
        checking["mode"] = check_plausible(model, scene, x, mask.all(axis=(1, 2)), checking["mode"], prepared.inputs)
        output = model.run(x, width, mode=mode, output=output_kind, check="off", **prepared.inputs)
        output = output.float().cpu().numpy()
        for (r, c), vector in zip(batch, output, strict=True):
            if grid.per == "chip":
                emb[r, c] = vector
                continue
            row, col = block.row + r, block.col + c
            r0, r1, c0, c1 = grid.chip_core(row, col)
            side = crop // patch
            tokens = vector[model.num_prefix_tokens:].reshape(side, side, dims)
            step = stride // patch
            emb[r0 - block.out_row:r1 - block.out_row, c0 - block.out_col:c1 - block.out_col] = \
                tokens[r0 - row * step:r1 - row * step, c0 - col * step:c1 - col * step]
    emb[frac == 0] = np.nan
    return {"embedding": emb, "valid": frac}, len(run)


__all__ = ["SceneError", "SceneResult", "embed_scene", "weights_fingerprint"]
