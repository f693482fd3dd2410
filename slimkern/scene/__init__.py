"""Scene-scale embedding: GeoTIFF/COG/JP2 scenes in, Cloud-Optimized GeoTIFF or GeoParquet out, at any width.

>>> model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)                         # doctest: +SKIP
>>> slimkern.embed_scene(model, "scene.tif", width=0.1, out="emb.parquet")            # doctest: +SKIP

Modules: :mod:`.source` (scenes and window reads), :mod:`.grid` (chips, overlap, output grid), :mod:`.prepare`
(pixels -> model input), :mod:`.pipeline` (:func:`embed_scene`), :mod:`.partial` (resume), :mod:`.cog` and
:mod:`.geoparquet` (outputs), :mod:`.catalog` (scene lists), :mod:`.ray_data` (many scenes on Ray Data),
:mod:`.command` (``slimkern embed``). The public names below need the ``scene`` extra (rasterio, pyarrow,
shapely, pyproj) and import it on first use, so ``slimkern`` itself imports without it.
"""

from __future__ import annotations

import importlib

from ..extras import require

_EXPORTS = {"embed_scene": "pipeline", "SceneResult": "pipeline", "Scene": "source", "SceneError": "source",
            "open_scene": "source", "embed_scenes_ray": "ray_data", "SceneEmbedder": "ray_data"}


def require_extra() -> None:
    """Raise :class:`slimkern.extras.MissingExtra` naming the pip install when the ``scene`` extra is missing."""
    require("scene", "scene embedding")


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_extra()
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
