"""Request and response bodies of ``POST /v1/embed``: npy, safetensors or JSON, with clear errors.

- ``application/x-npy``: request one array ``[B, C, H, W]`` (``numpy.save``); response the float32
  embeddings, with width, relative_flops, plan, mode, budget and provenance (JSON) in ``X-Slimkern-*`` headers.
- ``application/x-safetensors``: request a tensor named ``x``; response a float32 tensor ``embeddings``, the
  same facts in the file's metadata and in the headers.
- ``application/json``: request ``{"x": nested lists, "width" | "flops" | "latency_ms": ..., "mode": ...,
  "output": ..., "normalize": ..., "bands": [...], "units": ...}``; response ``{"embeddings": nested lists,
  "shape": [...], "width": ..., "relative_flops": ..., "plan": ..., "mode": ..., "budget": ..., "provenance": {...}}``.

Inputs are floating point (float16/32/64, or bfloat16 in safetensors); the server casts them to the model's dtype.
"""

from __future__ import annotations

import io
import json
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


class PayloadError(ValueError):
    """A body that cannot be decoded (HTTP 400)."""


class UnsupportedMediaType(ValueError):
    """A Content-Type the server does not read (HTTP 415)."""


class NotAcceptable(ValueError):
    """An Accept header that names no encoding the server writes (HTTP 406)."""


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type or Accept entry (parameters and case dropped)."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The input batch of a request body and, for JSON, its other fields (budget, mode, output, ...)."""
    kind = media_type(content_type)
    if kind == NPY:
        return _as_input(_decode_npy(body)), {}
    if kind == SAFETENSORS:
        return _as_input(_decode_safetensors(body)), {}
    if kind == JSON:
        return _decode_json(body)
    raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}; send one of {', '.join(MEDIA_TYPES)}")


def _decode_npy(body: bytes) -> torch.Tensor:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PayloadError(f"body is not a .npy array ({err}); write it with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise PayloadError("body is an .npz archive; send one array written with numpy.save")
    return array_to_tensor(array)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """A float16/32/64 numpy array of either byte order as a tensor (``PayloadError`` for other dtypes)."""
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):  # longdouble has no torch dtype
        raise PayloadError(f"x is {array.dtype}; send normalised floating-point values (float32, or float16/float64)")
    # big-endian arrays (numpy.save of '>f4') are valid .npy files, torch only reads native byte order
    return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))


def _decode_safetensors(body: bytes) -> torch.Tensor:
    try:
        tensors = safetensors_load(body)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise PayloadError(f"body is not a safetensors file ({err})") from None
    if "x" not in tensors:
        raise PayloadError(f"the safetensors body must hold a tensor named 'x', it holds {sorted(tensors)}")
    return tensors["x"]


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
