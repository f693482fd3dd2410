"""The CUDA kernels compile for H100 (sm_90a) and A100 (sm_80) without warnings and use the tensor cores without
local memory: nvcc and cuobjdump on the kernel files of csrc/, no GPU needed (csrc/check_sass.py does the work
and prints the per-kernel table: ``python csrc/check_sass.py``). About 30-60 s on 2 cores; skipped without nvcc.
``SLIMKERN_TEST_CUDA_BUILD=1`` also JIT-builds the whole extension (binding included) without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_sass", ROOT / "csrc" / "check_sass.py")
check_sass = sys.modules["check_sass"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(check_sass)

NVCC = check_sass.find_nvcc()
CUOBJDUMP = check_sass.find_cuobjdump(NVCC)
pytestmark = pytest.mark.skipif(NVCC is None or CUOBJDUMP is None,
                                reason=f"needs nvcc and cuobjdump (nvcc={NVCC}, cuobjdump={CUOBJDUMP})")
CASES = [(f, a) for f in check_sass.KERNEL_FILES for a in check_sass.ARCHS]


@pytest.fixture(scope="module")
def results():
    """Every (file, arch) compiled once, in parallel; a compile error is kept and reported by its own case."""
    try:
        return check_sass.check()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"nvcc failed (warnings are errors): {' '.join(exc.cmd)}\n{exc.stderr}")


@pytest.mark.parametrize("source, arch", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_kernels_compile_without_warnings_and_use_tensor_cores_without_spills(results, source, arch):
    reports = results[(source, arch)]
    assert reports, f"{source} for {arch}: the cubin holds no kernel (missing explicit instantiations?)"
    print("\n" + check_sass.table(reports))
    problems = [f"{r.name}: {'; '.join(r.problems())}" for r in reports if r.problems()]
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="needs c++filt to read kernel names")
def test_every_dtype_and_head_dim_bucket_is_instantiated(results):
    """The dispatchers pick among these instantiations at run time; each must be in the cubin."""
    names = {r.name for r in results[("attention.cu", "sm_90a")] + results[("sliced_linear.cu", "sm_90a")]}
    for dtype in ("__nv_bfloat16", "__half"):
        for d in (16, 32, 64, 128, 256):
            assert f"void slimkern::attention_kernel<{dtype}, {d}>(slimkern::AttentionParams, bool)" in names
        for tile in ("64, 64, 2, 2, false", "128, 128, 2, 4, false", "64, 64, 2, 2, true"):
            assert f"void slimkern::sliced_linear_kernel<{dtype}, {tile}>(slimkern::LinearParams, bool)" in names


BUILD_CHECK = """
import torch
from slimkern.backends.cuda import build
ext = build.jit_build()
x = torch.ones(2, 2, dtype=torch.bfloat16)
for call in (lambda: ext.sliced_linear(x, x, None, None, None, None, None, x, 2, 2, False, 0, 0),
             lambda: ext.sliced_linear(x.float(), x, None, None, None, None, None, x, 2, 2, False, 0, 0),
             lambda: ext.attention(x[None, None], x[None, None], x[None, None], None, x[None], 1.0, True),
             lambda: ext.layer_norm(x, None, None, None, x, None, 1e-6)):
    try:
        call()
    except RuntimeError as exc:
        print(str(exc).splitlines()[0])
"""


@pytest.mark.skipif(os.environ.get("SLIMKERN_TEST_CUDA_BUILD") != "1",
                    reason="builds the whole extension (1-3 min on 2 cores); set SLIMKERN_TEST_CUDA_BUILD=1")
def test_extension_builds_and_its_checks_refuse_cpu_tensors():
    """The whole extension (binding with torch headers + kernels, sm_90) builds with torch's JIT builder and ninja,
    imports without a GPU, and its own checks name the problem. Cached across runs (a rerun takes seconds)."""
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": str(os.cpu_count() or 1),
           "SLIMKERN_CUDA_CACHE": os.environ.get("SLIMKERN_CUDA_CACHE_CPU_CHECK",
                                                 str(Path.home() / ".cache" / "slimkern" / "cuda-cpu-check"))}
    result = subprocess.run([sys.executable, "-c", BUILD_CHECK], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "slimkern cuda: x must be a CUDA tensor, got cpu",
        "slimkern cuda: x has dtype Float; the kernels take bfloat16 or float16",
        "slimkern cuda: q must be a CUDA tensor, got cpu",
        "slimkern cuda: x must be a CUDA tensor, got cpu",
    ], result.stdout


def test_the_check_sees_spills_and_missing_tensor_cores(tmp_path):
    """The checker is not vacuous: a kernel with a dynamically indexed local array uses LDL/STL and no HMMA."""
    source = tmp_path / "spilling.cu"
    source.write_text("__global__ void spilling(float* out, int i) {\n  float buf[512];\n"
                      "  for (int j = 0; j < 512; ++j) buf[j] = out[j * i];\n  out[0] = buf[i & 511];\n}\n")
    cubin = check_sass.compile_cubin(NVCC, str(source), "sm_90a", tmp_path)
    (report,) = check_sass.inspect_cubin(CUOBJDUMP, cubin, "attention.cu", "sm_90a")  # judged as a hot kernel
    assert report.ldl_stl > 0 and report.hmma == 0
    assert report.problems() == ["no tensor-core instruction (HMMA/HGMMA)",
                                 f"local memory: {report.ldl_stl} LDL/STL, {report.local_bytes} bytes"]
