"""CPU detection from /proc/cpuinfo texts of the CPU kinds slimkern meets (x86 with and without AMX, Arm)."""

import pytest

from slimkern import hardware
from slimkern.hardware import parse_cpuinfo

INTEL_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else
flags\t\t: fpu
"""
AMD_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni
"""
AMD_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu avx2 fma
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""
NO_FLAGS = """processor\t: 0
model name\t: a CPU that lists no flags
"""


@pytest.mark.parametrize("text, vendor, bf16, fp16, amx", [
    (INTEL_SPR, "GenuineIntel", ("avx512_bf16", "amx_bf16"), ("avx512_fp16",), True),
    (AMD_ZEN4, "AuthenticAMD", ("avx512_bf16",), (), False),
    (AMD_ZEN3, "AuthenticAMD", (), (), False),
    (GRAVITON3, "0x41", ("bf16",), ("asimdhp",), False),
])
def test_parse_cpuinfo(text, vendor, bf16, fp16, amx):
    info = parse_cpuinfo(text)
    assert info.vendor == vendor and info.flags_known
    assert info.native_bf16 == bf16 and info.native_fp16 == fp16 and info.amx == amx


def test_first_processor_only_and_missing_flags():
    assert parse_cpuinfo(INTEL_SPR).model == "Intel(R) Xeon(R) Platinum 8480+"
    info = parse_cpuinfo(NO_FLAGS)
    assert not info.flags_known and not info.native_bf16 and info.model == "a CPU that lists no flags"


def test_no_cpuinfo_file(monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", "/nonexistent/cpuinfo")
    hardware.cpu_info.cache_clear()
    try:
        info = hardware.cpu_info()
        assert not info.flags_known and not info.native_bf16 and "platform module" in info.source
        assert "unknown (no ISA flag list" in hardware.cpu_summary()["isa flags"]
    finally:
        hardware.cpu_info.cache_clear()


def test_summary_names_the_torch_build():
    summary = hardware.cpu_summary()
    assert set(summary) == {"cpu", "isa flags", "torch", "threads"}
    assert "CPU capability" in summary["torch"] and "intra-op" in summary["threads"]
