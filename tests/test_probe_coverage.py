"""The probes cover the runtime: every arithmetic aten op that a low-precision CPU forward of any family runs on
low-precision tensors is also run, in that dtype, by :mod:`slimkern.probes` (which compares it with float64), so a
kernel that is wrong on some CPU is caught by ``slimkern doctor`` and at load, whatever op it is.

A new op in a forward (a new family, a new fused path) fails this test until a probe runs it too.
"""

import functools

import pytest
import torch

from slimkern import probes
from tests.helpers import OpRecorder
from tests.zoo.test_all_backends import INPUTS, small_model
from tests.zoo.test_stem import CANONICAL

#: Ops that move, compare or convert values without arithmetic a kernel could get wrong in a dtype-specific way.
EXACT = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "slice", "select", "unbind", "split",
         "expand", "alias", "unsqueeze", "squeeze", "squeeze_", "detach", "lift_fresh", "clone", "contiguous", "copy_",
         "_to_copy", "cat", "stack", "repeat", "constant_pad_nd", "index", "_local_scalar_dense", "eq", "ne", "gt",
         "lt", "all", "abs", "isnan", "isinf", "isfinite", "where", "nan_to_num", "empty", "empty_like",
         "empty_strided", "zeros", "full", "fill_"}


@functools.cache
def forward_ops(dtype: torch.dtype, path: str = "run") -> dict[str, set[str]]:
    """Op -> the families whose CPU forward (``path``: ``run`` or the float64 ``reference``) runs it on ``dtype``
    tensors (full width and d_k' = 1)."""
    seen: dict[str, set[str]] = {}
    for name in CANONICAL:
        model = small_model(name, "torch").to(dtype)
        inputs = INPUTS.get(name, {})
        bands = len(inputs["wavelengths"]) if "wavelengths" in inputs else len(model.cfg.bands)
        x = torch.randn(2, bands, model.cfg.arch.img_size, model.cfg.arch.img_size, dtype=dtype)
        with OpRecorder(dtype) as recorder:
            for width in (1.0, 0.01):
                getattr(model, path)(x, width, **inputs)
        for op in recorder.ops - EXACT:
            seen.setdefault(op, set()).add(name)
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_probes_run_every_arithmetic_op_of_a_forward(dtype):
    with OpRecorder(dtype) as recorder:
        results = probes.probe(probes.cases(), "cpu", dtype)
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
    missing = {op: sorted(names) for op, names in forward_ops(dtype).items() if op not in recorder.ops}
    assert not missing, f"ops a {dtype} forward runs that no probe runs (add a case to slimkern/probes.py): {missing}"


def test_the_recorder_sees_the_fast_path():
    """The check above is not vacuous: the fused GEMM and attention kernels are among the recorded ops."""
    ops = forward_ops(torch.bfloat16)
    assert {"_scaled_dot_product_flash_attention_for_cpu", "native_layer_norm"} <= set(ops)
    if probes.fused_gemm_cases() and torch.backends.mkldnn.is_available():
        assert "_linear_pointwise" in ops


def test_the_float64_reference_runs_no_low_precision_arithmetic():
    """What every low-precision test compares with (``validate``, ``reference``) is float64 arithmetic on the
    model's rounded weights and inputs, never another bfloat16 kernel: a kernel that is wrong in bfloat16 on some
    CPU (the AMX convolution) cannot be wrong on both sides of such a test."""
    assert not forward_ops(torch.bfloat16, "reference")
