"""Copernicus-FM (spectral mode): checkpoints, slimming, FLOPs, inputs, and width-1.0 equivalence with torchgeo's
``CopernicusFM`` built with the official LayerNorm eps 1e-6 (torchgeo's own default is 1e-5)."""

import warnings
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.registry import get_cfg
from tests.helpers import rel_error
from tests.zoo.dofa_helpers import image_like, official_shapes, random_state, torchgeo_modules

TINY = {"depth": 2, "dim": 128, "num_heads": 2}
S2_NM = [440, 490, 560, 665, 705, 740, 783, 842, 860, 940, 1610, 2190]
S2_BW_NM = [20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 90, 180]
UNKNOWN = torch.full((2, 4), float("nan"))
# lon, lat, days since 1970-01-01, area of one 16 x 16 patch at 10 m (km^2), as Copernicus-Bench builds them
KNOWN = torch.tensor([[11.57, 48.14, 19_500.0, 0.0256], [-70.65, -33.45, 17_800.0, 0.0256]])


def load(weights=None, **overrides) -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("copernicus_fm_base", weights=weights, **{**TINY, **overrides})


def official_shapes_cfm(dim: int, depth: int, variable: bool = True) -> dict[str, tuple[int, ...]]:
    """Keys of torchgeo's ``CopernicusFM_ViT_base_varlang`` file: DOFA v1's keys with the hypernetwork under
    ``patch_embed_spectral`` (and ``patch_embed_variable`` + ``language_proj``), plus the metadata layers."""
    dofa = official_shapes(dim, depth)
    shapes = {k.replace("patch_embed.", "patch_embed_spectral."): v for k, v in dofa.items()}
    if variable:
        shapes |= {k.replace("patch_embed.", "patch_embed_variable."): v for k, v in dofa.items()
                   if k.startswith("patch_embed.")}
        shapes |= {"patch_embed_variable.language_proj.weight": (128, 2048),
                   "patch_embed_variable.language_proj.bias": (128,)}
    for name in ("coord", "scale", "time"):
        shapes |= {f"{name}_fc.weight": (dim, dim), f"{name}_fc.bias": (dim,), f"{name}_token": (1, 1, dim)}
    return shapes


@pytest.fixture(scope="module")
def model():
    return load()


@pytest.fixture(scope="module")
def images():
    return image_like(2, 12)


@pytest.fixture(scope="module")
def torchgeo_reference(model):
    cfm = torchgeo_modules()[1]
    reference = cfm.CopernicusFM(img_size=224, patch_size=16, embed_dim=128, depth=2, num_heads=2, num_classes=0,
                                 norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"fc_norm", "patch_embed_variable"}
    return reference


def reference_features(reference, x, metadata, wavelengths=S2_NM, bandwidths=S2_BW_NM):
    with torch.no_grad():
        return reference.forward_features(x, metadata, wavelengths=wavelengths, bandwidths=bandwidths)


# -- registry, keys, parameter counts -----------------------------------------------------------------
def test_names_and_cfg():
    cfg = get_cfg("copernicus_fm_base")
    assert get_cfg("copernicusfm_base") is cfg
    assert (cfg.arch.dim, cfg.arch.depth, cfg.arch.num_heads, cfg.arch.patch_size, cfg.arch.norm_eps) == \
        (768, 12, 12, 16, 1e-6)
    assert len(cfg.bands) == len(cfg.mean) == 12
    assert cfg.checkpoint.container_keys == ("model",)
    assert cfg.checkpoint.drop_prefixes == ("patch_embed_variable.",)


def test_full_size_keys_equal_torchgeo_without_variable_mode():
    cfm = torchgeo_modules()[1]
    with torch.device("meta"):
        reference = cfm.copernicusfm_base()
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                if not k.startswith(("fc_norm", "head", "patch_embed_variable"))}
    model = build_meta("copernicus_fm_base")
    assert {k: tuple(p.shape) for k, p in model.named_parameters()} == expected
    assert expected == official_shapes_cfm(768, 12, variable=False)
    assert sum(p.numel() for p in model.parameters()) == 113_084_672  # DOFA-base's 111,310,592 + metadata layers


# -- checkpoints ---------------------------------------------------------------------------------------
def test_official_container_round_trip(tmp_path):
    state = random_state(official_shapes_cfm(128, 2))
    path = tmp_path / "CopernicusFM_ViT_base_varlang.pth"
    torch.save({"model": state, "epoch": 99}, path)  # the official loader reads ckpt['model'] when present
    loaded = load(weights=path)
    kept = {k: v for k, v in state.items() if not k.startswith("patch_embed_variable.")}
    assert loaded.state_dict().keys() == kept.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, kept[key]), key
    flat = load(weights=state)  # torchgeo's re-hosted file is the flat dict
    assert rel_error(flat.run(image_like(1, 12)), loaded.run(image_like(1, 12))) == 0.0


# -- the slimmed engine against the reference ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
@pytest.mark.parametrize("width", [1.0, 0.5, 0.1, 0.001])
def test_engine_matches_reference(model, images, width, mode):
    x, meta = images[:1], KNOWN[:1]
    out = model.run(x, width, mode=mode, metadata=meta)
    assert rel_error(out, model.reference(x, width, mode=mode, metadata=meta)) < 1e-5


def test_engine_matches_reference_tokens(model, images):
    for width in (1.0, 0.1):
        out = model.run(images, width, output="tokens")
        assert rel_error(out, model.reference(images, width, output="tokens")) < 1e-5


# -- equivalence with torchgeo -------------------------------------------------------------------------
@pytest.mark.parametrize("metadata", [UNKNOWN, KNOWN], ids=["unknown", "known"])
@pytest.mark.parametrize("size", [224, 160])  # 160 px: the stored 14 x 14 positions are resized (antialiased)
def test_full_width_equals_torchgeo(model, torchgeo_reference, metadata, size):
    x = image_like(2, 12, size)
    want = reference_features(torchgeo_reference, x, metadata)
    assert rel_error(model.run(x, metadata=None if metadata is UNKNOWN else metadata), want) < 1e-5


def test_reference_responds_to_every_input(model, torchgeo_reference, images):
    """The comparisons above are not vacuous: image, spectra and each metadata field move the output."""
    base = reference_features(torchgeo_reference, images, KNOWN)
    changed = [
        reference_features(torchgeo_reference, image_like(2, 12, seed=1), KNOWN),
        reference_features(torchgeo_reference, images, KNOWN, wavelengths=[w * 1.2 for w in S2_NM]),
        reference_features(torchgeo_reference, images, KNOWN, bandwidths=[w * 2 for w in S2_BW_NM]),
        reference_features(torchgeo_reference, images, UNKNOWN),
    ]
    for column, delta in ((0, 3.0), (1, 3.0), (2, 40.0), (3, 0.05)):
        meta = KNOWN.clone()
        meta[:, column] += delta
        changed.append(reference_features(torchgeo_reference, images, meta))
    for other in changed:
        assert rel_error(other, base) > 1e-2
    shifted = model.run(images, wavelengths=[w * 1.2 for w in S2_NM], bandwidths=S2_BW_NM, metadata=KNOWN)
    assert rel_error(shifted, changed[1]) < 1e-5


def test_unknown_metadata_falls_back_per_sample(model, torchgeo_reference, images):
    """Official code: one NaN anywhere in the batch -> the learned token for the whole batch; here per sample,
    which equals the official output of each sample run alone."""
    mixed = KNOWN.clone()
    mixed[1, 0] = float("nan")  # sample 1: longitude unknown -> coordinate token; its time and area are known
    mixed[0, 2] = float("nan")  # sample 0: date unknown -> time token
    out = model.run(images, metadata=mixed)
    for i in range(2):
        want = reference_features(torchgeo_reference, images[i:i + 1], mixed[i:i + 1])
        assert rel_error(out[i:i + 1], want) < 1e-5


# -- FLOPs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width, mode, size", [(1.0, "attn+ffn", 224), (0.1, "attn+ffn", 224),
                                               (0.001, "attn+ffn", 224), (0.25, "attn", 224), (0.25, "ffn", 224),
                                               (0.5, "attn+ffn", 160)])
def test_flops_match_flop_counter_on_reference(model, width, mode, size):
    x = image_like(1, 12, size)
    model.kernel_cache.clear()  # an uncached pass runs the hypernetwork, which flops() counts
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode, metadata=KNOWN[:1])
    assert model.flops(width, mode=mode, image_size=size) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_full_size_relative_compute():
    model, dofa = build_meta("copernicus_fm_base"), build_meta("dofa_base")
    assert model.flops() == dofa.flops() + 3 * 2 * 768 * 768  # same stem and blocks plus the metadata projections
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.25, 0.1, 0.001)]
    assert rel == sorted(rel, reverse=True) and 0.04 < rel[-1] < 0.06


# -- inputs --------------------------------------------------------------------------------------------
def test_bad_inputs(model, images):
    with pytest.raises(ValueError, match="got wavelengths but no bandwidths; pass both"):
        model.run(images, wavelengths=S2_NM)
    with pytest.raises(ValueError, match=r"wavelengths 0.00044, .* um are outside 0.3-30 um: .* micrometres where"):
        model.run(images, wavelengths=[w / 1000 for w in S2_NM], bandwidths=S2_BW_NM)  # run()'s input check
    with pytest.raises(ValueError, match=r"look like micrometres\); Copernicus-FM takes nanometres"):
        model.run(images, wavelengths=[w / 1000 for w in S2_NM], bandwidths=S2_BW_NM, check="off")
    with pytest.raises(ValueError, match=r"bandwidths .* must lie in \[1, 1e\+09\] nm \(they look like micrometres"):
        model.run(images, wavelengths=S2_NM, bandwidths=[w / 1000 for w in S2_BW_NM])
    with pytest.raises(ValueError, match="got 3 wavelengths for 12 bands"):
        model.run(images, wavelengths=S2_NM[:3], bandwidths=S2_BW_NM)
    with pytest.raises(ValueError, match=r"metadata must have shape \(2, 4\)"):
        model.run(images, metadata=KNOWN[:1])
    with pytest.raises(TypeError, match="metadata must be a tensor"):
        model.run(images, metadata=KNOWN.tolist())
    with pytest.raises(TypeError, match="metadata must be floating point"):
        model.run(images, metadata=KNOWN.long())
    bad = KNOWN.clone()
    bad[0, 1] = 95.0
    with pytest.raises(ValueError, match=r"metadata latitude must lie in \[-90, 90\]"):
        model.run(images, metadata=bad)
    bad = KNOWN.clone()
    bad[1, 3] = float("inf")
    with pytest.raises(ValueError, match="metadata contains Inf; use NaN for unknown values"):
        model.run(images, metadata=bad)
    with pytest.raises(ValueError, match="x has 2 bands; pass wavelengths"):
        model.run(image_like(1, 2))  # any band set runs, but only the 12 default bands without spectra
    assert model.run(image_like(1, 2), wavelengths=[5.55e7] * 2, bandwidths=[1e9] * 2).shape == (1, model.dim)
    with pytest.raises(TypeError, match="takes wavelengths, bandwidths, metadata; got unexpected language_embed"):
        model.run(images, language_embed=torch.zeros(2048))
    with pytest.raises(ValueError, match=r"image size 200x200 is not a positive multiple of the patch size 16"):
        model.run(image_like(1, 12, 200))


def test_normalize_uses_copernicus_bench_statistics(model):
    x = torch.full((1, 12, 16, 16), 1353.7)
    assert model.normalize(x)[0, 0].abs().max() < 1e-4  # B01's mean maps to 0
