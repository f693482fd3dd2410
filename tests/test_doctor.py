"""`slimkern doctor` and the op probes behind it: healthy here, and non-zero when an op is made to compute wrongly."""

import math

import pytest
import torch
import torch.nn.functional as F

from slimkern import probes
from slimkern.cli import main
from tests.test_precision import broken_layer_norm


@pytest.fixture(autouse=True)
def fresh_probes():
    probes.run_probes.cache_clear()
    yield
    probes.run_probes.cache_clear()


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


def wrong_gemm_at_12_bands(monkeypatch):
    """The AMX defect's pattern, moved to the GEMM: garbage in bfloat16 for a 12-band 8x8 patch (K = 768)."""
    linear = F.linear

    def wrong(x, weight, *args, **kwargs):
        out = linear(x, weight, *args, **kwargs)
        return torch.randn_like(out) if x.dtype == torch.bfloat16 and x.shape[-1] == 768 else out

    monkeypatch.setattr(F, "linear", wrong)


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
