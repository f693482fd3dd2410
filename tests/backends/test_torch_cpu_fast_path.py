"""The torch backend's CPU fast path (fused oneDNN GEMMs, column-major out-projection and fc2): used where it should
be, equal to the float64 reference, and replaced by the plain ops wherever it cannot or must not run."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.profiler import ProfilerActivity, profile

import slimkern
from slimkern import probes
from slimkern.backends.torch import onednn
from tests.helpers import rel_error, tiny_model

pytestmark = pytest.mark.skipif(not onednn.supported(torch.device("cpu"), torch.float32),
                                reason="this torch build has no fused oneDNN linear ops")
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}
COLUMN_SLICED = ("attn.proj.weight", "mlp.fc2.weight")


def ops_of(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def column_major(model) -> bool:
    return all(block._param(key).stride(0) == 1 for block in model.blocks for key in COLUMN_SLICED)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name, extra", [("satmae", {}), ("terramind_base", {}), ("softcon_vits14_s2", {})])
def test_fused_path_runs_and_matches_the_reference(name, extra, dtype):
    """ViT (GELU), TerraMind (bias-free SwiGLU), SoftCon (LayerScale) at widths down to d_k' = 1."""
    if not onednn.supported(torch.device("cpu"), dtype):
        pytest.skip(f"oneDNN has no {dtype} GEMM on this CPU")
    model = tiny_model(name, dtype=dtype, **extra)
    assert column_major(model)
    x = torch.randn(1, len(model.cfg.bands), 224, 224, dtype=dtype)
    assert "mkldnn::_linear_pointwise" in ops_of(lambda: model.run(x, 0.5))
    for width, mode in ((1.0, "attn+ffn"), (0.1, "attn+ffn"), (0.01, "attn+ffn"), (0.25, "attn"), (0.25, "ffn")):
        report = model.validate(x, width, mode=mode, output="tokens")
        assert report.rel_error < TOLERANCE[dtype], report


def test_weights_stay_one_copy_and_save_row_major(tmp_path):
    model = tiny_model()
    before = {k: (p.shape, p.untyped_storage().nbytes()) for k, p in model.named_parameters()}
    assert column_major(model)
    state = model.state_dict()
    assert all(t.is_contiguous() for t in state.values())
    save_file(state, tmp_path / "w.safetensors")  # refuses non-contiguous tensors
    again = tiny_model(weights=load_file(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(again.run(x, 0.1), model.run(x, 0.1))
    assert {k: (p.shape, p.untyped_storage().nbytes()) for k, p in model.named_parameters()} == before


def test_row_major_weights_fall_back_to_plain_gemms():
    """A state dict assigned in place leaves row-major weights (same device and dtype: no re-arrangement); the
    column-sliced GEMMs then run as F.linear, still exact."""
    model = tiny_model()
    model.load_state_dict(model.state_dict(), assign=True)
    assert not column_major(model)
    x = torch.randn(2, 3, 224, 224)
    assert model.validate(x, 0.1).ok
    assert "aten::addmm" in ops_of(lambda: model.run(x, 0.1))


def test_other_backends_and_dtypes_get_row_major_weights():
    for change in (lambda m: m.half(), lambda m: m.double(), lambda m: setattr(m, "backend_name", "triton")):
        model = tiny_model()
        change(model)
        assert all(b._param(k).is_contiguous() for b in model.blocks for k in COLUMN_SLICED)
    model.backend_name = "torch"  # the last one, back on the torch backend in float32
    assert column_major(model)


def test_autograd_and_compile_use_the_plain_ops():
    model = tiny_model()
    x = torch.randn(1, 37, model.dim, requires_grad=True)
    plan = model.plan(0.1)
    with torch.enable_grad():
        ops = ops_of(lambda: model.backend.forward_blocks(x, list(model.blocks), plan).sum().backward())
    assert "mkldnn::_linear_pointwise" not in ops and x.grad is not None and torch.isfinite(x.grad).all()


def test_a_wrong_fused_gemm_falls_back_with_a_warning(monkeypatch, fresh_probes):
    linear = onednn.linear

    def wrong(x, *args, **kwargs):
        return linear(x, *args, **kwargs) * 1.5

    monkeypatch.setattr(onednn, "linear", wrong)
    with pytest.warns(UserWarning, match="fused GEMM computes float32 wrongly .* runs its plain"):
        assert not onednn.usable(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load("satmae", depth=1, dim=64, num_heads=2)
    assert not column_major(model)
    x = torch.randn(1, 3, 224, 224)
    assert "mkldnn::_linear_pointwise" not in ops_of(lambda: model.run(x, 0.5))
    assert model.validate(x, 0.5).ok
    assert not probes.failures("cpu", torch.float32)  # optional: load and doctor's required set stay clean
    assert probes.failures("cpu", torch.float32, required=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_ops_against_float64(dtype):
    """Each epilogue on the views the backend passes, directly (the probes do the same at load)."""
    w = torch.randn(96, 300, dtype=torch.float64) / 17
    col = w.t().contiguous().t()  # column-major storage
    x, b, o = torch.randn(2, 19, 41, dtype=torch.float64), torch.randn(96, dtype=torch.float64), torch.randn(
        2, 19, 96, dtype=torch.float64)
    low = {name: t.to(dtype) for name, t in dict(x=x, b=b, o=o).items()}
    ref = F.linear(x, w[:, :41], b) + o
    out = onednn.linear_add(low["x"], col.to(dtype)[:, :41], low["b"], low["o"])
    assert onednn.dense(col.to(dtype)[:, :41]) and not onednn.dense(w[:, :41])
    assert out.dtype == dtype and rel_error(out, ref) < TOLERANCE[dtype] / 3
    h = torch.randn(5, 300, dtype=torch.float64)
    for activation, fn in (("gelu", F.gelu), ("silu", F.silu), ("none", lambda t: t)):
        out = onednn.linear(h.to(dtype), w.to(dtype)[:40], b.to(dtype)[:40], activation)
        assert rel_error(out, fn(F.linear(h, w[:40], b[:40]))) < TOLERANCE[dtype] / 3, activation


def test_a_cpu_without_onednn_bfloat16_runs_the_plain_ops(monkeypatch, fresh_probes):
    """On CPUs whose oneDNN has no bf16 GEMM (AVX2 only), the fused cases do not apply: no warning, no WRONG probe,
    plain ops, still exact."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert not onednn.supported(torch.device("cpu"), torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert not onednn.usable(torch.bfloat16)
        model = tiny_model(dtype=torch.bfloat16)
    assert not column_major(model)
    results = probes.run_probes("cpu", torch.bfloat16)
    assert all(r.ok for r in results) and not any(r.op == probes.FUSED_GEMM for r in results)
    x = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
    assert "mkldnn::_linear_pointwise" not in ops_of(lambda: model.run(x, 0.1))
    assert model.validate(x, 0.1).ok
