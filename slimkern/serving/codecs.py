"""Request and response bodies of ``POST /v1/embed``: npy, safetensors or JSON, with clear errors.

- ``application/x-npy``: request one array ``[B, C, H, W]`` (``numpy.save``); response the float32
  embeddings, with width, relative_flops, plan, mode, budget and provenance (JSON) in ``X-Slimkern-*`` headers.
- ``application/x-safetensors``: request a tensor named ``x``; response a float32 tensor ``embeddings``, the
  same facts in the file's metadata and in the headers.
- ``application/json``: request ``{"x": nested lists, "width" | "flops" | "latency_ms": ..., "mode": ...,
  "output": ..., "normalize": ..., "bands": [...], "units": ...}``; response ``{"embeddings": nested lists,
  "shape": [...], "width": ..., "relative_flops": ..., "plan": ..., "mode": ..., "budget": ..., "provenance": {...}}``.

Inputs are floating point (float16/32/64, or bfloat16 in safetensors); the server casts them to the model's dtype.
The npy and safetensors headers are read first: a declared shape whose bytes differ from what the body carries is
refused (400), and ``check_shape`` can refuse a shape over the model's limits, both before any array is allocated.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

NPY = "application/x-npy"
SAFETENSORS = "application/x-safetensors"
JSON = "application/json"
MEDIA_TYPES = (NPY, SAFETENSORS, JSON)
#: Floating dtypes of safetensors bodies and their bytes per value.
SAFETENSORS_FLOATS = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
MAX_SAFETENSORS_HEADER = 1 << 20  # a header naming a few tensors is far smaller

#: ``check_shape(shape)``: raise ``ValueError`` for a declared input shape the model must not take (HTTP 422).
CheckShape = Callable[[tuple[int, ...]], None]


class PayloadError(ValueError):
    """A body that cannot be decoded (HTTP 400)."""


class UnsupportedMediaType(ValueError):
    """A Content-Type the server does not read (HTTP 415)."""


class NotAcceptable(ValueError):
    """An Accept header that names no encoding the server writes (HTTP 406)."""


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type or Accept entry (parameters and case dropped)."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str | None, check_shape: CheckShape | None = None
           ) -> tuple[torch.Tensor, dict[str, Any]]:
    """The input batch of a request body and, for JSON, its other fields (budget, mode, output, ...).

    ``check_shape`` sees the declared shape of npy and safetensors bodies before their array is allocated (and the
    shape of a JSON body once parsed)."""
    check = check_shape or (lambda shape: None)
    kind = media_type(content_type)
    if kind == NPY:
        return _decode_npy(body, check), {}
    if kind == SAFETENSORS:
        return _as_input(_decode_safetensors(body, check)), {}
    if kind == JSON:
        x, fields = _decode_json(body)
        check(tuple(x.shape))
        return x, fields
    raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}; send one of {', '.join(MEDIA_TYPES)}")


def _declared_size(shape: tuple[int, ...], dtype: str, itemsize: int, available: int, where: str) -> None:
    """Refuse a header whose shape needs other than the ``available`` bytes."""
    needed = math.prod(shape) * itemsize
    if needed != available:
        dims = "x".join(map(str, shape)) or "scalar"
        raise PayloadError(f"the {where} declares {dims} {dtype} ({needed} bytes) but the body holds {available} "
                           "bytes after the header")


def _decode_npy(body: bytes, check: CheckShape) -> torch.Tensor:
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} (numpy.save writes 1.0 or 2.0)")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        raise PayloadError(f"body is not a .npy array ({err}); write it with numpy.save") from None
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise PayloadError(f"the .npy header declares the shape {shape!r}; write the array with numpy.save")
    _check_float(dtype)
    _declared_size(shape, str(dtype.newbyteorder("=")), dtype.itemsize, len(body) - stream.tell(), ".npy header")
    check(shape)
    array = np.frombuffer(body, dtype=dtype, offset=stream.tell()).reshape(shape, order="F" if fortran else "C")
    return array_to_tensor(array)


def _check_float(dtype: np.dtype) -> None:
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):  # longdouble has no torch dtype
        raise PayloadError(f"x is {dtype}; send normalised floating-point values (float32, or float16/float64)")


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """A float16/32/64 numpy array of either byte order as a tensor of its own, writable memory (``PayloadError`` for
    other dtypes)."""
    _check_float(array.dtype)
    # big-endian arrays (numpy.save of '>f4') are valid .npy files, torch only reads native byte order
    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), order="C"))


def _decode_safetensors(body: bytes, check: CheckShape) -> torch.Tensor:
    header = _safetensors_header(body)
    entry = header.get("x")
    if not isinstance(entry, dict):
        names = sorted(k for k in header if k != "__metadata__")
        raise PayloadError(f"the safetensors body must hold a tensor named 'x', it holds {names}")
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        if not all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end)) or begin > end:
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise PayloadError(f"body is not a safetensors file (tensor 'x' has the header entry {entry!r})") from None
    if dtype not in SAFETENSORS_FLOATS:
        raise PayloadError(f"x is {dtype}; send normalised floating-point values (F32, or F16/BF16/F64)")
    data = len(body) - 8 - int.from_bytes(body[:8], "little")
    _declared_size(shape, dtype, SAFETENSORS_FLOATS[dtype], min(end, data) - min(begin, data), "safetensors header")
    check(shape)
    try:
        return safetensors_load(body)["x"]
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise PayloadError(f"body is not a safetensors file ({err})") from None


def _safetensors_header(body: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors body: an 8-byte little-endian length, then that many bytes of JSON."""
    if len(body) < 8:
        raise PayloadError(f"body is not a safetensors file ({len(body)} bytes, shorter than its header length)")
    (length,) = struct.unpack("<Q", body[:8])
    if length > min(len(body) - 8, MAX_SAFETENSORS_HEADER):
        raise PayloadError(f"body is not a safetensors file (header length {length} for a body of {len(body)} bytes)")
    try:
        header = json.loads(body[8:8 + length])
    except (ValueError, RecursionError) as err:
        raise PayloadError(f"body is not a safetensors file (its header is not JSON: {err})") from None
    if not isinstance(header, dict):
        raise PayloadError("body is not a safetensors file (its header is not a JSON object)")
    return header


def _decode_json(body: bytes) -> tuple[torch.Tensor, dict[str, Any]]:
    try:
        data = json.loads(body)
    except RecursionError:  # a JSON bomb of deeply nested brackets: a client error, not a server crash (500)
        raise PayloadError("body nests JSON too deeply; send x as nested lists [B, C, H, W]") from None
    except ValueError as err:  # JSONDecodeError, bad UTF-8, integers of thousands of digits
        raise PayloadError(f"body is not valid JSON ({err})") from None
    if not isinstance(data, dict) or "x" not in data:
        raise PayloadError('a JSON body must be an object with the batch under "x" (nested lists [B, C, H, W])')
    try:
        x = torch.tensor(data.pop("x"), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:  # RuntimeError covers RecursionError
        raise PayloadError(f'"x" must be nested lists of numbers of one rectangular shape [B, C, H, W] ({err})'
                           ) from None
    return x.float(), data


def _as_input(x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        raise PayloadError(f"x is {x.dtype}; send normalised floating-point values (float32)")
    return x


def encode(embeddings: torch.Tensor, kind: str, meta: dict[str, Any]) -> bytes:
    """Response body of ``embeddings`` (sent as float32) in ``kind`` with ``meta`` (width, relative_flops, ...)."""
    out = embeddings.detach().float().cpu().contiguous()
    if kind == NPY:
        buffer = io.BytesIO()
        np.save(buffer, out.numpy(), allow_pickle=False)
        return buffer.getvalue()
    if kind == SAFETENSORS:
        metadata = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in meta.items()}
        return safetensors_save({"embeddings": out}, metadata=metadata)
    return json.dumps({"embeddings": out.tolist(), "shape": list(out.shape), **meta}).encode()


def response_kind(accept: str | None, request_kind: str) -> str:
    """The encoding of the response: the first type of ``Accept`` the server writes, else the request's encoding."""
    entries = [media_type(a) for a in (accept or "").split(",") if a.strip()]
    for entry in entries:
        if entry in MEDIA_TYPES:
            return entry
    if not entries or any(e in ("*/*", "application/*") for e in entries):
        return request_kind
    raise NotAcceptable(f"cannot answer in {accept!r}; accepted: {', '.join(MEDIA_TYPES)}")
