"""Compile every kernel file of csrc/ standalone with nvcc and check its SASS: no GPU needed.

    python csrc/check_sass.py                 # sm_90a and sm_80: per-kernel table, exit status 1 on a failure
    python csrc/check_sass.py --arch sm_90a

Each ``*.cu`` here is torch-free, so it compiles to a cubin in seconds with warnings as errors. ``cuobjdump``
(from the toolkit, or the copy in the triton wheel) dumps the SASS and the resource usage of every kernel.
Checks: the GEMM and attention kernels issue tensor-core instructions (``HMMA`` = mma.sync, ``HGMMA`` = wgmma);
no kernel touches local memory (``LDL``/``STL``: register spills or stack arrays; also ptxas' LOCAL bytes).
The table lists registers, local bytes, LDL/STL and HMMA/HGMMA counts per kernel.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).resolve().parent
KERNEL_FILES = ("sliced_linear.cu", "attention.cu", "layer_norm.cu")
#: Kernel files whose every kernel must run on the tensor cores.
TENSOR_CORE_FILES = ("sliced_linear.cu", "attention.cu")
ARCHS = ("sm_90a", "sm_80")
NVCC_FLAGS = ("-cubin", "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Werror", "all-warnings")


@dataclass
class KernelReport:
    file: str
    arch: str
    name: str
    registers: int
    local_bytes: int
    ldl_stl: int
    hmma: int
    hgmma: int

    def problems(self) -> list[str]:
        out = []
        if self.file in TENSOR_CORE_FILES and self.hmma + self.hgmma == 0:
            out.append("no tensor-core instruction (HMMA/HGMMA)")
        if self.ldl_stl or self.local_bytes:
            out.append(f"local memory: {self.ldl_stl} LDL/STL, {self.local_bytes} bytes")
        return out


def find_nvcc() -> str | None:
    """nvcc of $CUDA_HOME / $CUDA_PATH, on the PATH, or in /usr/local/cuda*."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
                 *sorted((str(p) for p in Path("/usr/local").glob("cuda-*")), reverse=True)):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def find_cuobjdump(nvcc: str | None) -> str | None:
    """cuobjdump next to nvcc, on the PATH, or the copy shipped in the triton wheel."""
    if nvcc and (Path(nvcc).parent / "cuobjdump").is_file():
        return str(Path(nvcc).parent / "cuobjdump")
    if shutil.which("cuobjdump"):
        return shutil.which("cuobjdump")
    spec = importlib.util.find_spec("triton")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if path.is_file():
            return str(path)
    return None


def compile_cubin(nvcc: str, source: str, arch: str, out_dir: Path) -> Path:
    """nvcc one kernel file to a cubin; raises CalledProcessError with the compiler output on an error or warning."""
    code = arch.removeprefix("sm_")
    cubin = out_dir / f"{Path(source).stem}.{arch}.cubin"
    cmd = [nvcc, *NVCC_FLAGS, f"-gencode=arch=compute_{code},code={arch}", "-o", str(cubin), str(CSRC / source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or result.stderr.strip():
        raise subprocess.CalledProcessError(result.returncode or 1, cmd, result.stdout, result.stderr)
    return cubin


def inspect_cubin(cuobjdump: str, cubin: Path, source: str, arch: str) -> list[KernelReport]:
    """Per-kernel registers and local bytes (``-res-usage``) and instruction counts (``--dump-sass``)."""
    usage = subprocess.run([cuobjdump, "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    resources = {m[1]: (int(m[2]), int(m[3])) for m in
                 re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) .*?LOCAL:(\d+)", usage)}
    sass = subprocess.run([cuobjdump, "--dump-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    reports = []
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name, body = chunk.split("\n", 1)
        name = name.strip()
        regs, local = resources.get(name, (-1, -1))
        reports.append(KernelReport(
            file=source, arch=arch, name=demangle(name), registers=regs, local_bytes=local,
            ldl_stl=len(re.findall(r"\b(?:LDL|STL)\b", body)), hmma=len(re.findall(r"\bHMMA\.", body)),
            hgmma=len(re.findall(r"\bHGMMA\.", body))))
    return reports


def demangle(name: str) -> str:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return name
    return subprocess.run([cxxfilt, name], capture_output=True, text=True).stdout.strip() or name


def check(archs=ARCHS, files=KERNEL_FILES) -> dict[tuple[str, str], list[KernelReport]]:
    """Compile and inspect every (file, arch) in parallel; raises RuntimeError if nvcc or cuobjdump is missing."""
    nvcc = find_nvcc()
    cuobjdump = find_cuobjdump(nvcc)
    if nvcc is None or cuobjdump is None:
        raise RuntimeError(f"needs nvcc and cuobjdump (found nvcc={nvcc}, cuobjdump={cuobjdump})")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        jobs = {(f, a): pool.submit(compile_cubin, nvcc, f, a, Path(tmp)) for f in files for a in archs}
        return {(f, a): inspect_cubin(cuobjdump, job.result(), f, a) for (f, a), job in jobs.items()}


def table(reports: list[KernelReport]) -> str:
    lines = [f"{'arch':7} {'regs':>4} {'local':>5} {'LDL/STL':>7} {'HMMA':>5} {'HGMMA':>5}  kernel"]
    for r in reports:
        flag = "  <-- " + "; ".join(r.problems()) if r.problems() else ""
        lines.append(f"{r.arch:7} {r.registers:4d} {r.local_bytes:5d} {r.ldl_stl:7d} {r.hmma:5d} {r.hgmma:5d}  "
                     f"{r.name}{flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    args = parser.parse_args(argv)
    try:
        results = check(tuple(args.arch))
    except subprocess.CalledProcessError as exc:
        print(f"compile failed: {' '.join(exc.cmd)}\n{exc.stderr}", file=sys.stderr)
        return 1
    reports = [r for key in sorted(results) for r in results[key]]
    print(table(reports))
    bad = [r for r in reports if r.problems()]
    print(f"\n{len(reports)} kernels, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
