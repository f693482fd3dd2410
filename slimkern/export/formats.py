"""The three artefact formats: how each is written from a ``torch.export`` program, loaded in its own runtime and
asked for its metadata.

============  ===============================================  ===========================================
format        file                                             runtime (verification, deployment)
============  ===============================================  ===========================================
``pt2``       ``torch.export.save`` archive (``.pt2``),        ``torch.export.load(path).module()``
              metadata in the extra file ``slimkern.json``
``onnx``      ONNX model (``.onnx``; weights over 2 GB in       onnxruntime (CPU execution provider here)
              ``<file>.data``), metadata in ``metadata_props``
``aoti``      AOTInductor package (``.pt2``: compiled shared   ``torch._inductor.aoti_load_package``, or
              library with the weights), package metadata      C++ ``AOTIModelPackageLoader``
============  ===============================================  ===========================================
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable

import torch

from ..extras import MissingExtra
from ..extras import require as require_extra

FORMATS = ("pt2", "onnx", "aoti")
SUFFIXES = {"pt2": ".pt2", "onnx": ".onnx", "aoti": ".pt2"}
#: Dtypes each format is exported and verified in (others are refused with the reason in :data:`DTYPE_REASONS`).
DTYPES = {
    "pt2": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "onnx": (torch.float32, torch.float16),
    "aoti": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
}
DTYPE_REASONS = {"onnx": "onnxruntime's CPU provider has no float64 Conv kernel and no bfloat16 kernels for these "
                         "graphs; use pt2 or aoti for those dtypes"}
#: (family, format) pairs export refuses, with the reason (the README table "Deploying one width" lists them).
REFUSED: dict[tuple[str, str], str] = {}
#: Python modules each format needs beyond torch (the ``export`` extra).
NEEDS = {"pt2": (), "onnx": ("onnx", "onnxscript", "onnxruntime"), "aoti": ()}
METADATA_FILE = "slimkern.json"


#: A format's libraries are not installed: the project-wide one-line error (exit code 3 in the CLI).
MissingExtraError = MissingExtra


def require(format: str) -> None:
    """Raise :class:`MissingExtraError` (one line naming the extra) if ``format``'s libraries are missing, or a clear
    error if an aoti export finds no C++ compiler (AOTInductor compiles the model to a shared library)."""
    require_extra("export", f"{format} export", NEEDS[format])
    if format == "aoti" and not (os.environ.get("CXX") or shutil.which("g++")):
        raise FileNotFoundError("aoti export compiles C++ but found no compiler (g++ or $CXX); install one "
                                "(apt-get install g++) or export pt2 / onnx")


def check_format(format: str, family: str, dtype: torch.dtype) -> None:
    """Raise a clear error for an unknown format or a refused (family, format) or (format, dtype)."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if (family, format) in REFUSED:
        raise NotImplementedError(f"{format} export of the {family} family is not supported: "
                                  f"{REFUSED[family, format]}")
    if dtype not in DTYPES[format]:
        supported = ", ".join(str(d).removeprefix("torch.") for d in DTYPES[format])
        reason = DTYPE_REASONS.get(format, "")
        raise NotImplementedError(f"{format} export in {str(dtype).removeprefix('torch.')} is not supported "
                                  f"(supported: {supported}){'; ' + reason if reason else ''}")


def files_of(format: str, path: str) -> list[str]:
    """Every file a ``format`` export to ``path`` may write."""
    return [path, path + ".data"] if format == "onnx" else [path]


def write(format: str, program: torch.export.ExportedProgram, path: str, metadata: dict[str, str],
          input_names: list[str]) -> list[str]:
    """Write ``program`` as ``format`` to ``path`` with ``metadata``; returns every file written."""
    if format == "pt2":
        torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata)})
        return [path]
    if format == "onnx":
        data = path + ".data"
        if os.path.exists(data):
            os.remove(data)  # a stale weight file of an earlier export to the same path
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=input_names, output_names=["embedding"],
                                         verbose=False)
        onnx_program.model.metadata_props.update(metadata)
        onnx_program.save(path)
        return [path, data] if os.path.exists(data) else [path]
    # freezing: weights are compile-time constants, so the CPU matmuls use pre-packed weights (same file size)
    torch._inductor.aoti_compile_and_package(program, package_path=path,
                                             inductor_configs={"aot_inductor.metadata": metadata, "freezing": True})
    return [path]


def load_runtime(format: str, path: str) -> Callable[..., torch.Tensor]:
    """The artefact at ``path`` loaded in its own runtime, as ``f(x, *graph_inputs) -> output`` on CPU tensors."""
    if format == "pt2":
        return torch.export.load(path).module()
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*inputs: torch.Tensor) -> torch.Tensor:
            feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs, strict=True)}
            return torch.from_numpy(session.run(None, feed)[0])

        return run_onnx
    runner = torch._inductor.aoti_load_package(path)
    return lambda *inputs: runner(*inputs)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The slimkern metadata of an exported artefact (any format), without running it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no exported file at {path!r}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(f"/extra/{METADATA_FILE}"):  # torch.export.save
                    return json.loads(archive.read(name))
                if name.endswith(".wrapper_metadata.json"):  # AOTInductor package
                    meta = json.loads(archive.read(name))
                    return {k: v for k, v in meta.items() if not k.startswith("AOTI_")}
        raise ValueError(f"{path!r} is a .pt2 archive without slimkern metadata (not written by slimkern export)")
    require("onnx")
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise ValueError(f"{path!r} is neither a .pt2 archive nor an ONNX model ({err})") from None
    return {p.key: p.value for p in model.metadata_props}
