"""`slimkern doctor` and the op probes behind it: healthy here, and non-zero when an op is made to compute wrongly."""

import math

import pytest
import torch
import torch.nn.functional as F

import slimkern
from slimkern import precision, probes
from slimkern.backends.torch import onednn
from slimkern.cli import main
from tests.helpers import OpRecorder
from tests.test_precision import broken_layer_norm, load

pytestmark = pytest.mark.usefixtures("fresh_probes")


def test_doctor_is_healthy_here(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for text in ("isa flags", "avx512_bf16", "amx_bf16", "oneDNN", "intra-op", "torch: available", "auto dtype cpu:",
                 "attention (SDPA)", "stem (patchify + GEMM)", "transformer block (torch backend)",
                 "result: every probe passes"):
        assert text in out, text
    assert "WRONG" not in out


def test_every_probe_within_tolerance_in_every_dtype():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        results = probes.run_probes("cpu", dtype)
        assert results and all(r.ok for r in results), [str(r) for r in results if not r.ok]
    head_dims = {r.case for r in results if r.op == "attention (SDPA)"}
    assert {"d_k'=1", "d_k'=6", "d_k'=21"} <= head_dims
    assert {f"{c} bands, patch 8" for c in range(1, 17)} <= {r.case for r in results}


def wrong_sdpa_at_head_dim(monkeypatch, head_dim):
    sdpa = F.scaled_dot_product_attention

    def wrong(q, *args, **kwargs):
        out = sdpa(q, *args, **kwargs)
        return out.flip(-2) if q.dtype == torch.bfloat16 and q.shape[-1] == head_dim else out

    monkeypatch.setattr(F, "scaled_dot_product_attention", wrong)


def wrong_fused_gemms(monkeypatch, when=lambda x: x.dtype == torch.bfloat16):
    """Every fused oneDNN GEMM of the CPU fast path returns garbage for inputs ``x`` where ``when(x)``."""
    def garbage(op):
        def wrong(x, *args, **kwargs):
            out = op(x, *args, **kwargs)
            return torch.randn_like(out) if when(x) else out
        return wrong

    for name in ("linear", "linear_add", "linear_mul"):
        monkeypatch.setattr(onednn, name, garbage(getattr(onednn, name)))


def wrong_gemm_at_12_bands(monkeypatch):
    """The AMX defect's pattern, moved to the GEMM: garbage in bfloat16 for a 12-band 8x8 patch (K = 768), in the
    plain GEMM and in the fused oneDNN one alike (the stem runs whichever this machine's fast path uses)."""
    def at_768(x):
        return x.dtype == torch.bfloat16 and x.shape[-1] == 768

    linear = F.linear

    def wrong(x, weight, *args, **kwargs):
        out = linear(x, weight, *args, **kwargs)
        return torch.randn_like(out) if at_768(x) else out

    monkeypatch.setattr(F, "linear", wrong)
    wrong_fused_gemms(monkeypatch, at_768)


@pytest.mark.parametrize("breaks, op, case", [
    (broken_layer_norm, "layer_norm", "d=1024"),
    (lambda mp: wrong_sdpa_at_head_dim(mp, 21), "attention (SDPA)", "d_k'=21"),
    (wrong_gemm_at_12_bands, "stem (patchify + GEMM)", "12 bands, patch 8"),
])
def test_doctor_fails_when_an_op_computes_wrongly(monkeypatch, capsys, breaks, op, case):
    breaks(monkeypatch)
    assert main(["doctor", "--all"]) == 1
    out = capsys.readouterr().out
    assert f"WRONG: {op} [{case}] in bfloat16 on cpu" in out
    assert "result: some ops compute wrongly here" in out
    wrong = [r for r in probes.run_probes("cpu", torch.bfloat16) if not r.ok]
    assert (op, case) in {(r.op, r.case) for r in wrong}
    assert all(r.ok for r in probes.run_probes("cpu", torch.float32))  # float32 untouched by these faults


def test_load_refuses_a_gemm_that_is_wrong_in_every_form(monkeypatch):
    """The AMX-class defect in the GEMM itself: the fused path falls back, the fallback is wrong too, load refuses."""
    wrong_gemm_at_12_bands(monkeypatch)
    with pytest.warns(UserWarning, match="fused GEMM computes bfloat16 wrongly"):
        with pytest.raises(precision.DtypeCheckError, match=r"stem \(patchify \+ GEMM\) \[12 bands, patch 8\]"):
            slimkern.load("satmae", depth=1, dim=64, num_heads=2, dtype=torch.bfloat16)
    assert load(dtype=torch.float32).dtype == torch.float32


@pytest.mark.skipif(not onednn.supported(torch.device("cpu"), torch.bfloat16), reason="no fused oneDNN GEMMs here")
def test_a_wrong_fused_gemm_fails_the_doctor_and_the_fast_path_falls_back(monkeypatch, capsys):
    wrong_fused_gemms(monkeypatch)
    with pytest.warns(UserWarning, match="fused GEMM computes bfloat16 wrongly on this CPU .* runs its plain"):
        model = slimkern.load("satmae", depth=1, dim=64, num_heads=2, dtype=torch.bfloat16)
    x = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
    with OpRecorder() as recorder:
        model.run(x, 0.5)
    assert "_linear_pointwise" not in recorder.ops
    for width in (1.0, 0.1, 0.01):
        assert model.validate(x, width).ok, width
    assert main(["doctor", "--all"]) == 1
    out = capsys.readouterr().out
    assert f"WRONG: {probes.FUSED_GEMM} [fc2 column prefix + residual] in bfloat16 on cpu" in out
    assert "result: the fused GEMMs of the CPU fast path compute wrongly here in bfloat16; the torch backend runs " \
           "its plain ops instead" in out
    assert "WRONG: stem" not in out and "WRONG: transformer block" not in out  # they ran the plain ops


def test_an_op_that_raises_counts_as_wrong(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel for this dtype")

    monkeypatch.setattr(F, "gelu", refuse)
    gelu = [r for r in probes.run_probes("cpu", torch.float16) if r.op == "gelu"]
    assert gelu and all(math.isinf(r.rel_error) and not r.ok for r in gelu)


def test_doctor_arguments(capsys):
    assert main(["doctor", "--dtypes", "float32"]) == 0
    assert "bfloat16" not in capsys.readouterr().out.split("probes on cpu")[1]
    assert main(["doctor", "--dtypes", "float8"]) == 2
    assert "--dtypes takes float32, bfloat16, float16, float64; got float8" in capsys.readouterr().err
