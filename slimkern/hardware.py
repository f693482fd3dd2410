"""What this machine's CPU can do: vendor, model and the instruction-set flags that decide low-precision support.

Read from ``/proc/cpuinfo`` on Linux (x86 ``flags``, Arm ``Features``); elsewhere the ISA flags are unknown and
slimkern treats the CPU as having no native bfloat16 (``dtype="auto"`` then picks float32).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

CPUINFO = "/proc/cpuinfo"
#: Flags shown by ``slimkern doctor``, as Linux spells them, for x86 and Arm CPUs.
ISA_FLAGS = {"x86": ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16", "amx_fp16"),
             "arm": ("asimd", "asimdhp", "bf16", "sve")}
#: Any of these means bfloat16 dot products in hardware (AVX512-BF16, AMX-BF16, Armv8.6 BF16).
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16")
#: Any of these means float16 arithmetic in hardware (AVX512-FP16, AMX-FP16, Arm FP16).
NATIVE_FP16 = ("avx512_fp16", "amx_fp16", "asimdhp")


@dataclass(frozen=True)
class CPUInfo:
    """The CPU as slimkern sees it. ``flags`` is empty when the source lists none (then ``flags_known`` is False)."""

    vendor: str
    model: str
    flags: frozenset[str]
    flags_known: bool
    source: str

    @property
    def native_bf16(self) -> tuple[str, ...]:
        """The flags that give this CPU native bfloat16 (empty: none)."""
        return tuple(f for f in NATIVE_BF16 if f in self.flags)

    @property
    def native_fp16(self) -> tuple[str, ...]:
        return tuple(f for f in NATIVE_FP16 if f in self.flags)

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags


def parse_cpuinfo(text: str) -> CPUInfo:
    """The first processor entry of a ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough: every core of a machine reports the same
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    vendor = fields.get("vendor_id") or fields.get("cpu implementer", "unknown vendor")
    model = fields.get("model name") or fields.get("cpu part") or fields.get("hardware") or "unknown model"
    flag_text = fields.get("flags", fields.get("features"))
    return CPUInfo(vendor=vendor, model=model, flags=frozenset((flag_text or "").split()),
                   flags_known=flag_text is not None, source=CPUINFO)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CPUInfo:
    """This machine's CPU (read once per process)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CPUInfo(vendor="unknown vendor", model=platform.processor() or platform.machine() or "unknown model",
                       flags=frozenset(), flags_known=False, source=f"platform module ({platform.system()})")


def onednn_version() -> str:
    """oneDNN (MKL-DNN) version torch was built with, from its build configuration; '' when absent."""
    if not torch.backends.mkldnn.is_available():
        return ""
    for word in torch.__config__.show().split("MKL-DNN", 1)[-1].split()[:2]:
        if word.startswith("v") and word[1:2].isdigit():
            return word
    return "version unknown"


def cpu_summary() -> dict[str, str]:
    """Readable lines about the CPU and torch's CPU build (for ``slimkern doctor``)."""
    info = cpu_info()
    shown = ISA_FLAGS["arm" if platform.machine().lower().startswith(("arm", "aarch")) else "x86"]
    flags = ", ".join(f"{f} {'yes' if f in info.flags else 'no'}" for f in shown) if info.flags_known \
        else "unknown (no ISA flag list on this system)"
    onednn = onednn_version()
    if onednn:
        onednn += " enabled" if torch.backends.mkldnn.enabled else " disabled"
        isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
        onednn += f", ONEDNN_MAX_CPU_ISA={isa_cap}" if isa_cap else ""
    return {
        "cpu": f"{info.vendor}, {info.model}, {os.cpu_count()} logical CPUs ({platform.machine()})",
        "isa flags": f"{flags} [{info.source}]",
        "torch": f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                 f"oneDNN {onednn or 'absent'}, MKL {'yes' if torch.backends.mkl.is_available() else 'no'}",
        "threads": f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op",
    }
