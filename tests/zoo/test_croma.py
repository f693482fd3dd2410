"""CROMA: the 5-sub-dict checkpoint, three encoders with 2-D ALiBi and cross-attention, slimming, FLOPs, inputs.

The width-1.0 checks compare against torchgeo's ``CROMA`` (``torchgeo.models.croma``, a copy of the official
``use_croma.py`` modules) loaded from the same official-format sub-state-dicts.
"""

import functools
import math
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.checkpoints import CheckpointError, check_state_dict, unwrap_state_dict
from slimkern.registry import get_cfg
from slimkern.zoo.croma import CROMA, OPTICAL_BANDS, RADAR_BANDS, alibi_2d, alibi_slopes
from tests.helpers import MODEL_SPECS, rel_error
from tests.zoo._torchgeo import torchgeo_models

SPECS = MODEL_SPECS
NAMES = ("croma_base", "croma_large")
# 16 heads as the real models (torchgeo's ViT hard-codes 16) of head dim 4: d_k' = 4, 2, 1, 1 at WIDTHS;
# 32 px = 4 x 4 patches; depth 2 -> optical 2, radar 1, joint 1 layers
SMALL = {"dim": 64, "depth": 2, "img_size": 32}
WIDTHS = (1.0, 0.5, 0.1, 0.001)
MODES = ("attn+ffn", "attn", "ffn")
BANDS = {"optical": 12, "radar": 2, "joint": 14}


@functools.cache
def small(**overrides) -> CROMA:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("croma_base", **{**SMALL, **overrides})


def images(modality: str, batch: int = 2, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    return torch.randn(batch, BANDS[modality], *size)


# -- the official checkpoint -------------------------------------------------------------------------
def official_shapes(dim: int, depth: int) -> dict[str, dict[str, list[int]]]:
    """Key names and shapes of the official file, per sub-state-dict (use_croma.py module names)."""
    hidden = 4 * dim

    def attention(prefix: str) -> dict:
        return {f"{prefix}.to_qkv.weight": [3 * dim, dim], f"{prefix}.to_out.weight": [dim, dim],
                f"{prefix}.to_out.bias": [dim], f"{prefix}.input_norm.weight": [dim],
                f"{prefix}.input_norm.bias": [dim]}

    def ffn(prefix: str) -> dict:
        return {f"{prefix}.net.0.weight": [hidden, dim], f"{prefix}.net.0.bias": [hidden],
                f"{prefix}.net.3.weight": [dim, hidden], f"{prefix}.net.3.bias": [dim],
                f"{prefix}.input_norm.weight": [dim], f"{prefix}.input_norm.bias": [dim]}

    def encoder(bands: int, layers: int) -> dict:
        out = {"linear_input.weight": [dim, bands * 64], "linear_input.bias": [dim]}
        for i in range(layers):
            out |= attention(f"transformer.layers.{i}.0") | ffn(f"transformer.layers.{i}.1")
        return out | {"transformer.norm_out.weight": [dim], "transformer.norm_out.bias": [dim]}

    gap = {"0.weight": [dim], "0.bias": [dim], "1.weight": [hidden, dim], "1.bias": [hidden],
           "3.weight": [dim, hidden], "3.bias": [dim]}
    joint = {}
    for i in range(depth // 2):
        cross = {f"layers.{i}.1.to_{n}.weight": [dim, dim] for n in "qkv"}
        cross |= {f"layers.{i}.1.to_out.weight": [dim, dim], f"layers.{i}.1.to_out.bias": [dim],
                  f"layers.{i}.1.input_norm.weight": [dim], f"layers.{i}.1.input_norm.bias": [dim]}
        joint |= attention(f"layers.{i}.0") | cross | ffn(f"layers.{i}.2")
    joint |= {"norm_out.weight": [dim], "norm_out.bias": [dim]}
    return {"s1_encoder": encoder(2, depth // 2), "s1_GAP_FFN": gap, "s2_encoder": encoder(12, depth),
            "s2_GAP_FFN": gap, "joint_encoder": joint}


def random_official_file(dim: int, depth: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Non-trivial random weights in the official container (norms near 1, biases small)."""
    generator = torch.Generator().manual_seed(seed)

    def make(key: str, shape: list[int]) -> torch.Tensor:
        t = torch.randn(shape, generator=generator)
        if len(shape) == 2:
            return t * shape[1] ** -0.5
        norm_weight = key.endswith("weight") and ("norm" in key or key == "0.weight")
        return 1 + 0.1 * t if norm_weight else 0.1 * t

    return {top: {k: make(k, s) for k, s in keys.items()} for top, keys in official_shapes(dim, depth).items()}


@pytest.mark.parametrize("name", NAMES)
def test_cfg_and_official_keys_match_the_spec(name):
    spec, cfg = SPECS[name], get_cfg(name)
    arch = cfg.arch
    assert (arch.dim, arch.depth, arch.num_heads, arch.patch_size, arch.img_size) == (
        spec["embed_dim"], spec["depth"]["s2_optical"], 16, 8, 120)
    assert arch.dim // arch.num_heads == spec["head_dim"] and arch.norm_eps == 1e-5
    assert cfg.bands == OPTICAL_BANDS + RADAR_BANDS and len(cfg.bands) == 14
    assert cfg.mean == (0.0,) * 14 and cfg.std == (1.0,) * 14
    model = build_meta(name)
    assert (len(model.blocks), len(model.radar.blocks), len(model.joint.blocks)) == (
        spec["depth"]["s2_optical"], spec["depth"]["s1_radar"], spec["depth"]["joint_cross"])
    # the key pattern used for the small files below is exactly the spec's at full size
    listed = {**spec["state_dict"], **spec["non_encoder_state_dict"]}
    ours = {f"{top}/{k}": s for top, keys in official_shapes(arch.dim, arch.depth).items() for k, s in keys.items()}
    assert ours == listed


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_spec(name):
    model, counts = build_meta(name), SPECS[name]["encoder_params"]

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    optical = count(model) - count(model.radar) - count(model.joint) - count(model.gap_ffn)
    assert optical == counts["s2_encoder"]
    assert count(model.radar) - count(model.radar.gap_ffn) == counts["s1_encoder"]
    assert count(model.joint) == counts["joint_encoder"]


def flatten_checkpoint(official: dict) -> dict:
    """The official dict of 5 state dicts merged as the loader does (keys ``<sub-dict>.<key>``)."""
    return unwrap_state_dict(official, get_cfg("croma_base").checkpoint)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_official_file_matches_the_model(name):
    model = build_meta(name)
    arch = model.cfg.arch
    file = {top: {k: torch.empty(s, device="meta") for k, s in keys.items()}
            for top, keys in official_shapes(arch.dim, arch.depth).items()}
    state = model.convert_checkpoint(flatten_checkpoint(file))
    check_state_dict(state, {k: p.shape for k, p in model.named_parameters()}, name)  # raises on any mismatch


def test_official_container_round_trip(tmp_path):
    official = random_official_file(SMALL["dim"], SMALL["depth"])
    path = tmp_path / "CROMA_base.pt"
    torch.save(official, path)
    model = slimkern.load("croma_base", weights=path, **SMALL)  # the official file, as released
    state = model.state_dict()
    flat = model.convert_checkpoint(flatten_checkpoint(official))
    assert state.keys() == flat.keys()
    for key, value in state.items():  # the official layout comes back out, bit for bit
        assert torch.equal(value, flat[key]), key
    # names that show the mapping (official -> model)
    renamed = dict(zip(flatten_checkpoint(official), flat, strict=True))
    assert renamed["s2_encoder.transformer.layers.1.0.to_qkv.weight"] == "blocks.1.attn.qkv.weight"
    assert renamed["s2_encoder.transformer.layers.0.1.net.3.bias"] == "blocks.0.mlp.fc2.bias"
    assert renamed["s1_encoder.linear_input.weight"] == "radar.patch_embed.weight"
    assert renamed["s1_GAP_FFN.3.weight"] == "radar.gap_ffn.fc2.weight"
    assert renamed["joint_encoder.layers.0.1.input_norm.weight"] == "joint.blocks.0.norm_cross.weight"
    assert renamed["joint_encoder.layers.0.1.to_v.weight"] == "joint.blocks.0.cross_attn.v.weight"
    assert renamed["joint_encoder.layers.0.2.net.0.weight"] == "joint.blocks.0.mlp.fc1.weight"
    assert renamed["joint_encoder.norm_out.bias"] == "joint.norm.bias"
    # this model's own names load as they are
    twin = slimkern.load("croma_base", weights=state, **SMALL)
    x = images("joint")
    assert torch.equal(twin.run(x, 0.1), model.run(x, 0.1))


def test_bad_checkpoints():
    official = random_official_file(SMALL["dim"], SMALL["depth"])
    with pytest.raises(CheckpointError, match=r"state dicts \['joint_encoder'\] are missing"):
        slimkern.load("croma_base", weights={k: v for k, v in official.items() if k != "joint_encoder"}, **SMALL)
    flat = flatten_checkpoint(official)
    del flat["joint_encoder.layers.0.1.to_k.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys: joint.blocks.0.cross_attn.k.weight"):
        slimkern.load("croma_base", weights=flat, **SMALL)


# -- slimming: the engine against the reference path --------------------------------------------------
@pytest.mark.parametrize("modality", BANDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_engine_matches_reference(width, mode, modality):
    model = small()
    x = images(modality, batch=1)
    for output in ("pooled", "tokens"):
        fast = model.run(x, width, mode=mode, output=output)
        ref = model.reference(x, width, mode=mode, output=output)
        assert fast.dtype == torch.float32 and ref.dtype == torch.float64
        assert rel_error(fast, ref) < 1e-5, (width, mode, modality, output)


def test_plan_covers_the_encoders_that_run():
    model = build_meta("croma_base")
    assert len(model.plan(0.1).blocks) == 12 and model.plan(0.1) is model.plan(0.1, modality="optical")
    assert len(model.plan(0.1, modality="radar").blocks) == 6
    joint = model.plan(0.1, modality="joint")
    assert len(joint.blocks) == 24 and {(b.head_dim, b.mlp_hidden) for b in joint.blocks} == {(4, 307)}
    with pytest.raises(ValueError, match="unknown CROMA modality 'sar'"):
        model.plan(0.1, modality="sar")


def test_outputs_and_widths_change_them():
    model = small()
    x = images("joint")
    assert model.run(x, 0.5).shape == (2, 64) and model.run(x, 0.5, output="tokens").shape == (2, 16, 64)
    assert model.run(x[:, :12], 0.5, output="tokens").shape == (2, 16, 64)
    outs = [model.run(x, w) for w in (1.0, 0.5, 0.1)]
    assert rel_error(outs[1], outs[0]) > 1e-2 and rel_error(outs[2], outs[1]) > 1e-2
    # joint tokens depend on both parts of the input
    other = x.clone()
    other[:, :12] = torch.randn(2, 12, 32, 32)
    assert rel_error(model.run(other, 0.5), outs[1]) > 1e-3


def test_other_and_rectangular_sizes():
    model = small()
    for size in ((48, 48), (40, 24)):
        x = images("joint", batch=1, size=size)
        assert model.run(x, 0.5, output="tokens").shape == (1, model.num_tokens(*size), 64)
        assert rel_error(model.run(x, 0.5), model.reference(x, 0.5)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_against_float64(dtype):
    model = small(dtype=dtype)
    report = model.validate(images("joint", batch=1).to(dtype), 0.5)
    assert report.ok, report


def test_triton_backend_joint():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = small().to(device)
    model.backend_name = "triton"
    x = images("joint", batch=1).to(device)
    try:
        for width in (1.0, 0.1):
            assert rel_error(model.run(x, width, output="tokens"), model.reference(x, width, output="tokens")) < 1e-5
    finally:
        model.to("cpu").backend_name = "auto"


# -- the 2-D ALiBi bias ---------------------------------------------------------------------------------
def test_alibi_matches_torchgeo_and_the_official_slopes():
    torchgeo_models()
    from torchgeo.models.croma import get_2dalibi

    want = get_2dalibi(num_heads=16, num_patches=225)[0].double()
    got = alibi_2d(16, 15, 15, torch.device("cpu"), torch.float64)
    assert got.shape == (16, 225, 225) and rel_error(got, want) < 1e-6  # torchgeo builds it in float32
    assert alibi_slopes(16) == pytest.approx([2 ** (-0.5 * (h + 1)) for h in range(16)], rel=1e-15)
    # official get_slopes for a head count that is not a power of two: 8 slopes, then every other one of 16
    assert alibi_slopes(12) == pytest.approx([2 ** -(h + 1) for h in range(8)]
                                             + [2 ** (-0.5 * (h + 1)) for h in range(16)][0::2][:4])
    # token (r, c) = r * W + c; distances in patch units
    rect = alibi_2d(2, 2, 3, torch.device("cpu"), torch.float64)
    assert rect[0, 0, 5].item() == pytest.approx(-(2**-4) * math.sqrt(1 + 4))


def test_alibi_is_cached_per_grid_device_and_dtype():
    model = small()
    bias = model.attention_bias(32, 32, torch.float32)
    assert bias is model.attention_bias(32, 32, torch.float32) and bias.shape == (16, 16, 16)
    assert model.attention_bias(32, 32, torch.float64).dtype == torch.float64
    assert model.attention_bias(48, 40, torch.float32).shape == (16, 30, 30)


# -- the independent implementation: torchgeo --------------------------------------------------------
@pytest.mark.parametrize("size", [32, 48])
def test_full_width_equals_torchgeo(size):
    torchgeo_models()
    from torchgeo.models.croma import CROMA as TorchgeoCROMA

    official = random_official_file(SMALL["dim"], SMALL["depth"], seed=1)
    reference = TorchgeoCROMA(modalities=["sar", "optical"], encoder_dim=SMALL["dim"], encoder_depth=SMALL["depth"],
                              num_heads=16, patch_size=8, image_size=size)
    for top, state in official.items():
        getattr(reference, top).load_state_dict(state, strict=True)
    model = slimkern.load("croma_base", weights=official, **SMALL)
    optical, radar = torch.randn(2, 12, size, size), torch.randn(2, 2, size, size)
    with torch.no_grad():
        want = reference.eval()(x_sar=radar, x_optical=optical)
    cases = {"optical": optical, "sar": radar, "joint": torch.cat([optical, radar], dim=1)}
    for prefix, x in cases.items():
        for output, key in (("tokens", f"{prefix}_encodings"), ("pooled", f"{prefix}_GAP")):
            assert rel_error(model.run(x, 1.0, output=output), want[key]) < 1e-5, key
            assert rel_error(model.reference(x, 1.0, output=output), want[key]) < 1e-5, key


# -- FLOPs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", BANDS)
@pytest.mark.parametrize("width, mode", [(1.0, "attn+ffn"), (0.1, "attn+ffn"), (0.001, "attn"), (0.5, "ffn")])
def test_flops_match_flop_counter(width, mode, modality):
    model = small()
    for size in ((32, 32), (40, 24)):
        with FlopCounterMode(display=False) as counter:
            model.reference(images(modality, batch=1, size=size), width, mode=mode)
        counted = counter.get_total_flops()
        assert model.flops(width, mode=mode, image_size=size, modality=modality) == pytest.approx(counted, rel=0.01)


def test_full_size_compute():
    base, large = build_meta("croma_base"), build_meta("croma_large")
    # optical croma_base: a ViT-B (12 blocks) over 225 tokens with a 12-band patch-8 stem and the GAP-FFN head
    tokens, d = 225, 768
    block = 2 * tokens * d * 3 * d + 4 * tokens * tokens * d + 2 * tokens * d * d + 4 * tokens * d * 4 * d
    assert base.flops() == 12 * block + 2 * tokens * 12 * 64 * d + 4 * d * 4 * d
    cross = 2 * tokens * d * d + 4 * tokens * d * d + 4 * tokens * tokens * d + 2 * tokens * d * d
    assert base.flops(modality="joint") == (base.flops() + base.flops(modality="radar") - 8 * d * 4 * d
                                            + 6 * (block + cross))
    for model in (base, large):
        for modality in BANDS:
            rel = [model.relative_flops(w, modality=modality) for w in (1.0, 0.5, 0.1, 0.001)]
            assert rel[0] == 1.0 and rel == sorted(rel, reverse=True)
            assert 0.08 < rel[2] < 0.13 and rel[3] < 0.02
    assert large.flops(modality="joint") / base.flops(modality="joint") == pytest.approx(3.5, abs=0.01)


# -- inputs and their normalisation --------------------------------------------------------------------
def readme_normalize(x: torch.Tensor, use_8_bit: bool) -> torch.Tensor:
    """The README's ``normalize`` (SatMAE/SeCo style), re-read: per channel over the batch, float32."""
    out = []
    for c in range(x.shape[1]):
        band = x[:, c].float()
        low, high = band.mean() - 2 * band.std(), band.mean() + 2 * band.std()
        v = (band - low) / (high - low)
        out.append(torch.clip(v * 255.0, 0, 255).to(torch.uint8).float() / 255 if use_8_bit else torch.clip(v, 0, 1))
    return torch.stack(out, dim=1)


def test_normalize_follows_the_readme():
    model = small()
    raw = torch.rand(4, 14, 32, 32) * torch.linspace(100, 5000, 14)[None, :, None, None]
    for eight_bit in (True, False):
        got = model.normalize(raw, eight_bit=eight_bit)
        want = readme_normalize(raw, eight_bit)
        assert got.dtype == torch.float32 and 0 <= got.min() and got.max() <= 1
        # float64 here vs float32 there: at most a rare one-step difference at a uint8 boundary
        assert (got - want).abs().max() <= 1 / 255 + 1e-6 and (got - want).abs().mean() < 1e-4
    assert model.normalize(raw[:, 12:].to(torch.int32)).dtype == torch.float32  # radar alone, integer input
    constant = raw.clone()
    constant[:, 3] = 7.0
    with pytest.raises(ValueError, match=r"bands \[3\] are constant in this batch"):
        model.normalize(constant)
    with pytest.raises(ValueError, match="x has 13 bands"):
        model.normalize(raw[:, :13])


def test_bad_inputs():
    model = small()
    with pytest.raises(ValueError, match=r"x has 3 bands .* 12 optical bands \(B01, .*\), 2 radar bands \(VV, VH\) "
                                         r"or 14 for the joint encoder"):
        model.run(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"image size 32x30 is not a positive multiple of the patch size 8"):
        model.run(torch.randn(1, 12, 32, 30))
    with pytest.raises(ValueError, match=r"image size 100x100 is not a positive multiple of the patch size 8"):
        build_meta("croma_base").flops(image_size=100)
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected modality"):
        model.run(torch.randn(1, 12, 32, 32), modality="optical")
    with pytest.raises(ValueError, match="embed takes one modality"):
        model.embed(torch.randn(1, 14, 32, 32))
    with pytest.raises(ValueError, match=r"depth must be >= 2"):
        small(depth=1)
