"""Shared test set-up: seeds, the Triton interpreter on GPU-less machines, markers."""

import os

import pytest
import torch

# The Triton interpreter must be chosen before triton is first imported (docs/kernels.md, testing).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Compare against exact fp32 everywhere: TF32 would blur the fp32 tolerances.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fresh_probes():
    """Re-run the op probes (and the fused-GEMM check of the CPU fast path) inside the test, and forget its results
    after it: for tests that make an op compute wrongly."""
    from slimkern import probes
    from slimkern.backends.torch import onednn

    def clear():
        probes.run_probes.cache_clear()
        onednn.usable.cache_clear()

    clear()
    yield
    clear()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: ViT-L sized checks that take tens of seconds on CPU")
