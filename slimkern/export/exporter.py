"""``slimkern.export``: one width of a loaded model as a dense, verified deployment artefact."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import torch

from ..backends import select_backend
from ..checks import check_output
from ..model import SlimModel
from ..plan import check_mode, check_width
from . import formats
from .dense import dense_copy
from .inputs import ExportModule, plan_inputs, run_kwargs, sample_inputs
from .metadata import build_metadata

#: Largest batch every artefact accepts (the batch dimension is dynamic in 1..MAX_BATCH).
MAX_BATCH = 256
#: Batch sizes the verification runs (1, and an odd size above the traced one).
VERIFY_BATCHES = (1, 5)


class VerificationError(ValueError):
    """The artefact, run in its own runtime, differs from ``model.run`` by more than the dtype's tolerance."""


@dataclass
class ExportResult:
    """What :func:`export` wrote and measured."""

    path: str
    files: list[str]
    format: str
    metadata: dict[str, str]
    #: batch size -> relative error vs ``model.run`` (empty without verification)
    errors: dict[int, float] = field(default_factory=dict)
    tolerance: float = 0.0
    #: seconds per step: trace, write (aoti: compile), verify
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files)


def export(model: SlimModel, width: float, path: str | os.PathLike, *, format: str | None = None,
           mode: str = "attn+ffn", output: str = "pooled", image_size: int | tuple[int, int] | None = None,
           frames: int | None = None, bands: int | None = None, inputs: tuple[str, ...] | None = None,
           constants: dict | None = None, checkpoint_sha256: str | None = None, verify: bool = True,
           progress: bool = False) -> ExportResult:
    """Export ``model`` at ``width`` as a dense artefact and check it against ``model.run`` in its own runtime.

    The artefact holds exactly the slimmed shapes (:func:`~slimkern.export.dense.dense_copy`) in the model's dtype,
    takes normalised images ``x`` ``[B, C, H, W]`` (Prithvi with ``frames``: ``[B, C, T, H, W]``) with a dynamic
    batch ``B`` in 1..256 and a fixed image size, and returns what ``model.run(x, width, mode=mode, output=output)``
    returns.

    Args:
        path: the file to write (``.onnx`` for onnx, ``.pt2`` for pt2 and aoti).
        format: ``"pt2"`` (torch.export program), ``"onnx"`` or ``"aoti"`` (AOTInductor package, compiled for this
            CPU); ``None`` takes it from the suffix (``.onnx`` -> onnx, ``.pt2`` -> pt2).
        image_size: fixed input size (default: the model's native size).
        frames: multi-temporal models (Prithvi): frames ``T`` of a 5-D input; ``None`` = single images.
        bands: input band count of band-flexible models (CROMA: 12 optical, 2 radar, 14 joint; DOFA, Copernicus-FM,
            Panopticon: from ``constants["wavelengths"]``); default ``len(model.cfg.bands)``.
        inputs: model-specific ``run()`` inputs that become graph inputs after ``x`` (per-image inputs only;
            default: those the model cannot run without, e.g. Prithvi TL's coordinates).
        constants: model-specific inputs baked into the graph: one image's value of a per-image input, or the band
            set's ``wavelengths`` / ``bandwidths``. Inputs in neither take the model's defaults.
        checkpoint_sha256: SHA-256 of the checkpoint file for the metadata (default: the one ``slimkern.load``
            computed from the weights file, ``model.checkpoint_sha256``).
        verify: load the artefact in its runtime, run batches of 1 and 5 random valid inputs and compare with
            ``model.run``; on a relative error above the dtype's tolerance remove the files and raise
            :class:`VerificationError`.
        progress: show a progress bar over the steps (tqdm).
    """
    width = check_width(width)
    check_mode(mode)
    check_output(output)
    path = os.fspath(path)
    format = _format_of(path, format)
    formats.check_format(format, model.cfg.family, model.dtype)
    formats.require(format)
    _check_destination(path, format)
    if model.device.type != "cpu":
        raise ValueError(f"export traces and verifies on the CPU; move the model there first (model.to('cpu')), "
                         f"it is on {model.device}")
    size = model._image_size(image_size)
    plan = plan_inputs(model, image_size=size, frames=frames, bands=bands, inputs=inputs, constants=constants)

    steps = ["materialise", "trace", "compile and write" if format == "aoti" else "write"] + (["verify"] * verify)
    bar = _progress(steps, progress, f"{model.cfg.name} width {width:g} -> {format}")
    generator = torch.Generator().manual_seed(0)
    example = sample_inputs(plan, 2, model.dtype, generator)  # batch 2: a batch of 1 would be specialised
    seconds = {}
    try:
        with _step(bar, seconds, "materialise"):
            dense = dense_copy(model, width, mode)
            module = ExportModule(dense, plan, output)
            with torch.no_grad():  # one eager run checks the inputs and fills the copy's kernel caches
                output_shape = tuple(module(*example).shape[1:])
            _freeze_caches(dense)
        with _step(bar, seconds, "trace"), torch.no_grad(), _failing("tracing", model, format):
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            # forward(x, *inputs): torch.export sees the graph inputs after x as one variadic argument (none: absent)
            dynamic = ({0: batch}, *([tuple({0: batch} for _ in example[1:])] if len(example) > 1 else []))
            program = torch.export.export(module, example, dynamic_shapes=dynamic)
        metadata = build_metadata(model, format=format, width=width, mode=mode, output=output, plan=plan,
                                  image_size=size, output_shape=output_shape,
                                  checkpoint_sha256=checkpoint_sha256, max_batch=MAX_BATCH)
        with _step(bar, seconds, steps[2]), _failing("writing", model, format, remove=formats.files_of(format, path)):
            files = formats.write(format, program, path, metadata, ["x", *plan.graph_inputs])
        result = ExportResult(path=path, files=files, format=format, metadata=metadata, seconds=seconds)
        if verify:
            with _step(bar, seconds, "verify"), _failing("verifying", model, format, remove=files):
                _verify(model, result, plan, width, mode, output, generator)
    finally:
        if bar is not None:
            bar.close()
    return result


def _verify(model: SlimModel, result: ExportResult, plan, width: float, mode: str, output: str,
            generator: torch.Generator) -> None:
    result.tolerance = select_backend("torch", model.device, model.dtype).tolerances[model.dtype]
    artefact = formats.load_runtime(result.format, result.path)
    for batch in VERIFY_BATCHES:
        values = sample_inputs(plan, batch, model.dtype, generator)
        expected = model.run(values[0], width, mode=mode, output=output, **run_kwargs(plan, values[1:], batch))
        got = artefact(*values)
        if tuple(got.shape) != tuple(expected.shape):
            raise VerificationError(f"{result.format} artefact returned shape {tuple(got.shape)} for batch {batch}, "
                                    f"model.run {tuple(expected.shape)}; the file was removed")
        exp = expected.double()
        result.errors[batch] = ((got.double() - exp).norm() / exp.norm()).item()
    worst = max(result.errors.values())
    if not worst <= result.tolerance:  # also catches NaN
        raise VerificationError(
            f"{result.format} artefact differs from model.run at width {width:g}: relative errors "
            + ", ".join(f"batch {b}: {e:.3g}" for b, e in result.errors.items())
            + f" > tolerance {result.tolerance:g} ({model.dtype}); the file was removed")


class ExportError(RuntimeError):
    """torch.export, the format's writer or its runtime failed on this model (the cause is chained)."""


@contextlib.contextmanager
def _failing(step: str, model: SlimModel, format: str, remove: list[str] = ()):
    """Remove the (partly) written files if the step fails; name the step for errors from inside torch."""
    try:
        yield
    except BaseException as err:
        for f in remove:
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)
        if isinstance(err, (VerificationError, KeyboardInterrupt)):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{format} export of {model.cfg.name} failed while {step}: {first}") from err


def _format_of(path: str, format: str | None) -> str:
    if format is not None:
        return format
    for suffix, name in ((".onnx", "onnx"), (".pt2", "pt2")):
        if path.endswith(suffix):
            return name
    raise ValueError(f"cannot tell the format from {path!r}: give format= one of {', '.join(formats.FORMATS)} "
                     "(or a path ending in .onnx or .pt2)")


def _check_destination(path: str, format: str) -> None:
    """Refuse a path the format cannot use or the process cannot write, before any work."""
    suffix = formats.SUFFIXES[format]
    if not path.endswith(suffix):
        raise ValueError(f"a {format} export is a {suffix} file; got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a folder")
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(folder, os.W_OK | os.X_OK)
    if not writable:
        raise PermissionError(f"cannot write {path!r}: permission denied")


def _freeze_caches(dense: SlimModel) -> None:
    """Keep the copy's generated kernels (DOFA, Copernicus-FM) as graph constants instead of tracing the
    hypernetwork into every call."""
    from ..zoo.dofa import KernelCache

    for module in dense.modules():
        for value in vars(module).values():
            if isinstance(value, KernelCache):
                value.freeze()


def _progress(steps: list[str], show: bool, title: str):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a cosmetic part of the export extra: pt2 and aoti export without it
        return None

    return tqdm(total=len(steps), desc=title, unit="step")


@contextlib.contextmanager
def _step(bar, seconds: dict[str, float], name: str):
    if bar is not None:
        bar.set_postfix_str(name)
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    if bar is not None:
        bar.update(1)
