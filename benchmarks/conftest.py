"""Shared settings of the pytest-benchmark kernel reports.

On a GPU the reports run in full (bf16, ViT-B and ViT-L shapes, batch 1 and 64, slimkern's Triton
kernels against cuBLAS / SDPA on contiguous copies). On a CPU they run in a reduced form (fp32,
ViT-B, batch 1, PyTorch providers only) so that CI can check they work.
"""

import os

import pytest
import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # never used for timing; keeps imports consistent with tests

DEVICE = "cuda" if GPU else "cpu"
DTYPE = torch.bfloat16 if GPU else torch.float32
# (dim, heads, mlp hidden) of the ViTs the zoo runs
SHAPES = {"vit_b": (768, 12, 3072), "vit_l": (1024, 16, 4096)} if GPU else {"vit_b": (768, 12, 3072)}
WIDTHS = (0.1, 0.25, 0.5, 1.0) if GPU else (0.1, 1.0)
BATCHES = (1, 64) if GPU else (1,)
TOKENS = 197


def timed(benchmark, fn, flops: float, **info) -> None:
    """Benchmark ``fn`` (synchronised, several calls per round) and record TFLOP/s and the device."""
    inner = 10 if GPU else 1

    def call():
        for _ in range(inner):
            fn()
        if GPU:
            torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=10 if GPU else 3, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test, nothing to report
        return
    seconds = benchmark.stats.stats.median / inner
    benchmark.extra_info.update(info, device=torch.cuda.get_device_name() if GPU else "cpu", dtype=str(DTYPE),
                                tflops=flops / seconds / 1e12, median_us=seconds * 1e6)


def cuda_op(name: str):
    """An op of the CUDA extension (``sliced_linear``, ``attention``); skips the benchmark with the reason when the
    ``cuda`` backend is not usable here (not built, build failed, self-test failed)."""
    from slimkern.backends import list_backends

    why = list_backends()["cuda"]
    if why:
        pytest.skip(f"cuda backend unavailable: {why}")
    from slimkern.backends import cuda

    return getattr(cuda, name)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
