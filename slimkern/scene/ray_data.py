"""Many scenes on a Ray cluster: Ray Data over the list of scenes, one model per actor.

Each actor (:class:`SceneEmbedder`) loads the model once and embeds whole scenes with :func:`embed_scene`
(its own reader threads, resume and output), so a scene's output is byte for byte what a local run writes.
Outputs (and the weights file) must be on storage every node sees.

>>> import ray; ray.init()               # a local cluster; ray.init(address="auto") joins a running one
>>> embed_scenes_ray("vit_tiny_eurosat", scenes, "emb/{scene}.tif", width=0.1, concurrency=4)  # doctest: +SKIP

``ray`` is imported when :func:`embed_scenes_ray` runs, not when this module is imported.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import torch

from .catalog import output_path
from .pipeline import embed_scene

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class SceneEmbedder:
    """A Ray Data actor: one loaded model, whole scenes in, one output file per scene.

    Args:
        name, weights: as :func:`slimkern.load` (``weights=None``: deterministic random weights).
        arch: architecture overrides (``depth=2`` ...), for tests and experiments.
        device, dtype, backend: where and how the model runs (``device="auto"``: the actor's GPU if any).
        options: keyword arguments of :func:`embed_scene` (``width``, ``per``, ``crop``, ``stride``, ...).
    """

    def __init__(self, name: str, weights: str | None = None, *, arch: dict | None = None, device: str = "auto",
                 dtype: str = "float32", backend: str = "auto", options: dict | None = None) -> None:
        from ..api import load

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with warnings.catch_warnings():
            if weights is None:
                warnings.simplefilter("ignore")  # random weights are what the caller asked for
            self.model = load(name, weights, device=device, dtype=DTYPES[dtype], backend=backend, **(arch or {}))
        self.options = {**(options or {}), "progress": False}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for item, out in zip(batch["scene"], batch["out"], strict=True):
            scene = json.loads(item)
            result = embed_scene(self.model, scene["source"], scene_id=scene["id"], out=out, **self.options)
            rows.append((result.scene, str(result.out), result.embedded, result.skipped, result.already_done,
                         result.seconds["total"]))
        names = ("scene", "out", "embedded", "skipped", "already_done", "seconds")
        return {name: np.array([row[i] for row in rows]) for i, name in enumerate(names)}


def embed_scenes_ray(name: str, scenes: list[dict], out: str, *, weights: str | None = None,
                     arch: dict | None = None, device: str = "auto", dtype: str = "float32", backend: str = "auto",
                     concurrency: int = 2, num_cpus: float = 1, num_gpus: float = 0, **options: Any
                     ) -> list[dict]:
    """Embed ``scenes`` (``{"id", "source"}`` as :func:`~slimkern.scene.catalog.expand_scenes` gives) on the Ray
    cluster this process is connected to (``ray.init()`` first; a local one is started otherwise), ``concurrency``
    actors with one model each. ``out`` is a template with ``{scene}``; ``options`` go to :func:`embed_scene`.
    Returns one record per scene (scene, out, embedded, skipped, already_done, seconds)."""
    import ray

    items = [{"scene": json.dumps(scene), "out": str(output_path(out, scene["id"], len(scenes)))} for scene in scenes]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(
        SceneEmbedder, batch_size=1, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
        fn_constructor_kwargs={"name": name, "weights": weights, "arch": arch, "device": device, "dtype": dtype,
                               "backend": backend, "options": options})
    return dataset.take_all()
