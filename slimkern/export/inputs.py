"""What an exported graph takes: the images ``x`` and, per model-specific ``run()`` input, a graph input or a constant.

Two kinds of model-specific inputs exist in the zoo:

- per image (Scale-MAE's ``res``, Prithvi TL's ``temporal_coords`` / ``location_coords``, Copernicus-FM's
  ``metadata``): the user chooses; a graph input has a leading batch dimension, a constant is one image's value
  baked into the graph and broadcast over the batch;
- per band set (``wavelengths``, ``bandwidths``): always constants. They fix the number of bands and generate the
  patch embedding (DOFA's and Copernicus-FM's kernel hypernetwork, Panopticon's channel embedding, which takes SAR
  band names), so one artefact serves one band set and its generated kernel is computed once, at export time.

A model input missing from :data:`EXTRA_INPUTS` is refused by :func:`plan_inputs`, so a new family cannot be exported
with an input silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..backends import select_backend
from ..model import SlimModel


@dataclass(frozen=True)
class ExtraInput:
    """One model-specific input of :meth:`SlimModel.run` as export sees it."""

    name: str
    #: Shape of one image's value (``T`` = frames); ``None`` for a per-band-set input (always a constant).
    per_image: tuple[str | int, ...] | None
    #: Graph input when the user says nothing (else: the model's own default, a constant).
    input_by_default: bool
    doc: str


EXTRA_INPUTS: dict[str, ExtraInput] = {e.name: e for e in (
    ExtraInput("res", (), False, "GSD ratio per image (Scale-MAE); model default 1.0"),
    ExtraInput("temporal_coords", ("T", 2), True, "(year, day of year) per frame (Prithvi TL)"),
    ExtraInput("location_coords", (2,), True, "(latitude, longitude) in degrees (Prithvi TL)"),
    ExtraInput("metadata", (4,), False, "lon, lat, days since 1970-01-01, patch area km^2; NaN = unknown "
                                        "(Copernicus-FM); model default all unknown"),
    ExtraInput("wavelengths", None, False, "one per band: micrometres (DOFA, Panopticon: or a SAR name), "
                                           "nanometres (Copernicus-FM); model default: its band set's"),
    ExtraInput("bandwidths", None, False, "one per band, nanometres (Copernicus-FM); model default: its band set's"),
)}


@dataclass(frozen=True)
class InputPlan:
    """The resolved inputs of one export: graph inputs after ``x`` (in order) and constants."""

    x_shape: tuple[int, ...]  # one image: [C, H, W] or [C, T, H, W]
    graph_inputs: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]  # one image's shape of each per-image input
    constants: dict[str, Any]  # name -> value as given (per-band-set) or a tensor of one image's value

    def describe(self, dtype: torch.dtype) -> list[dict]:
        """``[{name, shape, dtype}]`` of every graph input, ``x`` first (``"B"`` is the dynamic batch)."""
        aux = str(aux_dtype(dtype)).removeprefix("torch.")
        rows = [{"name": "x", "shape": ["B", *self.x_shape], "dtype": str(dtype).removeprefix("torch.")}]
        return rows + [{"name": n, "shape": ["B", *self.shapes[n]], "dtype": aux, "doc": EXTRA_INPUTS[n].doc}
                       for n in self.graph_inputs]

    def constants_json(self) -> dict[str, Any]:
        return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in self.constants.items()}


def aux_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the per-image inputs: at least float32 (a bfloat16 year 2021 would read 2016 or 2024)."""
    return torch.promote_types(dtype, torch.float32)


def plan_inputs(model: SlimModel, *, image_size: tuple[int, int], frames: int | None, bands: int | None,
                inputs: tuple[str, ...] | None, constants: dict[str, Any] | None) -> InputPlan:
    """Decide graph inputs and constants for ``model`` (see the module docstring), or raise a clear error."""
    name, constants = model.cfg.name, dict(constants or {})
    unknown = [i for i in model.extra_inputs if i not in EXTRA_INPUTS]
    if unknown:
        raise NotImplementedError(f"{name}: export does not know the run() inputs {unknown}; add them to "
                                  "slimkern.export.inputs.EXTRA_INPUTS")
    for what, given in (("inputs", inputs or ()), ("constants", constants)):
        foreign = sorted(set(given) - set(model.extra_inputs))
        if foreign:
            takes = ", ".join(model.extra_inputs) or "no model-specific inputs"
            raise ValueError(f"{name} takes {takes}; {what} names {', '.join(foreign)}")
    if inputs is None:
        inputs = tuple(i for i in model.extra_inputs if EXTRA_INPUTS[i].input_by_default and i not in constants)
    both = sorted(set(inputs) & set(constants))
    if both:
        raise ValueError(f"{name}: {', '.join(both)} given both as graph inputs and as constants; choose one")
    for i in inputs:
        if EXTRA_INPUTS[i].per_image is None:
            raise ValueError(f"{name}: {i} can only be a constant: it fixes the band set and generates the patch "
                             f"embedding, computed once at export (pass constants={{'{i}': [...]}})")
    if frames is not None and 5 not in model.input_ranks:
        raise ValueError(f"{name} takes single images [B, C, H, W]; frames is for multi-temporal models")
    if bands is None:
        given = constants.get("wavelengths")
        bands = len(given) if given is not None and model.any_band_count else len(model.cfg.bands)
    x_shape = (bands, *((frames,) if frames is not None else ()), *image_size)
    t = frames or 1
    shapes = {i: tuple(t if d == "T" else d for d in EXTRA_INPUTS[i].per_image)
              for i in model.extra_inputs if EXTRA_INPUTS[i].per_image is not None}
    baked = {}
    for key, value in constants.items():
        if shapes.get(key) is None:
            baked[key] = value
            continue
        tensor = torch.as_tensor(value, dtype=torch.float64)
        if tensor.dim() == len(shapes[key]) + 1 and tensor.shape[0] == 1:
            tensor = tensor[0]  # one image's value given with a batch of 1
        if tuple(tensor.shape) != shapes[key]:
            raise ValueError(f"{name}: constant {key} must be one image's value of shape {list(shapes[key])} "
                             f"({EXTRA_INPUTS[key].doc}); got shape {list(tensor.shape)}")
        baked[key] = tensor
    return InputPlan(x_shape=x_shape, graph_inputs=tuple(i for i in model.extra_inputs if i in inputs),
                     shapes={i: shapes[i] for i in inputs}, constants=baked)


def sample_inputs(plan: InputPlan, batch: int, dtype: torch.dtype, generator: torch.Generator
                  ) -> tuple[torch.Tensor, ...]:
    """Random valid inputs: ``x`` standard normal (a normalised image), then each graph input in a plausible range
    (Copernicus-FM metadata: every third image with unknown values, to exercise the learned fallback tokens)."""

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    values = [torch.randn(batch, *plan.x_shape, generator=generator, dtype=torch.float64)]
    for name in plan.graph_inputs:
        shape = (batch, *plan.shapes[name])
        if name == "res":
            value = uniform(shape, 0.5, 2.0)
        elif name == "temporal_coords":
            value = torch.stack([uniform(shape[:-1], 2000, 2025).floor(), uniform(shape[:-1], 1, 366).floor()], -1)
        elif name == "location_coords":
            value = torch.stack([uniform(shape[:-1], -60, 60), uniform(shape[:-1], -180, 180)], -1)
        elif name == "metadata":
            value = torch.stack([uniform(batch, -180, 180), uniform(batch, -80, 80), uniform(batch, 0, 20000),
                                 uniform(batch, 0.01, 100.0)], -1)
            value[1::3] = float("nan")
        else:
            raise NotImplementedError(f"no sample values for graph input {name!r}")
        values.append(value)
    return (values[0].to(dtype), *(v.to(aux_dtype(dtype)) for v in values[1:]))


def run_kwargs(plan: InputPlan, inputs: tuple[torch.Tensor, ...], batch: int) -> dict[str, Any]:
    """Keyword inputs of ``run`` / ``encode``: constants (per-image ones broadcast over ``batch``) and graph inputs."""
    kwargs = {}
    for key, value in plan.constants.items():
        kwargs[key] = value.expand(batch, *value.shape) if isinstance(value, torch.Tensor) else value
    kwargs.update(zip(plan.graph_inputs, inputs, strict=True))
    return kwargs


class ExportModule(nn.Module):
    """The traced forward: ``dense`` (:func:`~slimkern.export.dense.dense_copy`) at width 1.0 on the torch backend,
    ``forward(x, *graph_inputs)`` with the plan's constants baked in."""

    def __init__(self, dense: SlimModel, plan: InputPlan, output: str) -> None:
        super().__init__()
        self.model = dense
        self.plan = plan
        self.output = output
        self.blocks_backend = select_backend("torch", dense.device, dense.dtype)

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = run_kwargs(self.plan, inputs, x.shape[0])
        return self.model.encode(x, 1.0, "attn+ffn", self.output, self.blocks_backend, **kwargs)
