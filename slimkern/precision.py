"""Which floating dtype a model runs in: ``dtype="auto"``, and the check that a low-precision dtype computes
correctly on this CPU before a model is built in it.

``"auto"`` picks bfloat16 where the hardware has it natively and its ops pass :mod:`slimkern.probes` (a CPU with
AVX512-BF16 or AMX-BF16, a CUDA GPU with bf16), float32 otherwise; :func:`resolve_dtype` also says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import probes
from .hardware import cpu_info

#: dtype names accepted wherever a dtype is given as text (CLI, server, Ray Serve).
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
               "float64": torch.float64}
#: ``--dtype`` of every command that loads a model: ``auto`` or a dtype name.
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)
#: The dtypes whose CPU kernels are probed before a model is built in them.
PROBED = (torch.bfloat16, torch.float16)
WORKAROUND = ("workarounds: load with dtype=torch.float32 (or dtype='auto', which picks a dtype that passes here); "
              "if the failing ops run on oneDNN with AMX (`slimkern doctor` shows amx_bf16), start Python with "
              "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16; `slimkern doctor` prints every probe")


class DtypeCheckError(ValueError):
    """This dtype computes wrongly on this machine (a probe of an op the runtime uses is off against float64)."""


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and the reason it was picked."""

    dtype: torch.dtype
    reason: str

    def __str__(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.')} ({self.reason})"


def parse_dtype(value: str | torch.dtype) -> torch.dtype | str:
    """``"auto"``, a name of :data:`DTYPE_NAMES` or a floating ``torch.dtype`` -> ``"auto"`` or the dtype."""
    if value == "auto" or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in DTYPE_NAMES:
        return DTYPE_NAMES[value.removeprefix("torch.")]
    raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32, torch.bfloat16), 'auto' or one of "
                    f"{', '.join(map(repr, DTYPE_NAMES))}; got {value!r}")


def auto_dtype(device: str | torch.device) -> DtypeChoice:
    """The dtype ``"auto"`` picks on ``device``, with the reason."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return DtypeChoice(torch.bfloat16, f"GPU {torch.cuda.get_device_name(device)} has native bfloat16")
        return DtypeChoice(torch.float32, "this GPU has no native bfloat16")
    if device.type != "cpu":
        return DtypeChoice(torch.float32, f"no bfloat16 choice on {device.type} devices")
    info = cpu_info()
    if not info.flags_known:
        return DtypeChoice(torch.float32, "the CPU's instruction-set flags are unknown here, bfloat16 may be emulated")
    if not info.native_bf16:
        return DtypeChoice(torch.float32, "the CPU has no native bfloat16 (no avx512_bf16 or amx_bf16)")
    flags = " and ".join(info.native_bf16)
    wrong = probes.failures(device, torch.bfloat16)
    if wrong:
        return DtypeChoice(torch.float32, f"the CPU has {flags} but torch computes bfloat16 wrongly here: {wrong[0]}")
    return DtypeChoice(torch.bfloat16, f"the CPU has {flags} and every bfloat16 probe passes")


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> DtypeChoice:
    """``dtype`` as a ``torch.dtype`` for ``device`` (``"auto"`` resolved), checked on CPUs with
    :func:`check_dtype`."""
    parsed = parse_dtype(dtype)
    if parsed == "auto":
        return auto_dtype(device)
    check_dtype(parsed, device)
    return DtypeChoice(parsed, "requested")


def check_dtype(dtype: torch.dtype, device: str | torch.device) -> None:
    """Raise :class:`DtypeCheckError` naming the wrong ops if a probed dtype computes wrongly on this CPU.

    The probes run once per process and dtype (under 0.1 s of CPU time); other dtypes and devices pass unchecked.
    """
    device = torch.device(device)
    if device.type != "cpu" or dtype not in PROBED:
        return
    wrong = probes.failures(device, dtype)
    if wrong:
        name = str(dtype).removeprefix("torch.")
        listed = "; ".join(str(r) for r in wrong[:4]) + (f"; and {len(wrong) - 4} more" if len(wrong) > 4 else "")
        raise DtypeCheckError(
            f"torch {torch.__version__} computes {name} wrongly on this CPU ({cpu_info().model}), so slimkern refuses "
            f"to build a {name} model whose embeddings would be silently wrong: {listed}. {WORKAROUND}")
