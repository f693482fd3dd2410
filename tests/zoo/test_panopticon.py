"""Panopticon ViT-B/14: the released file, slimmed runs with optical and SAR bands, the channel inputs, FLOPs, bad
inputs, and width 1.0 against torchgeo 0.8.1's ``Panopticon``."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from tests.helpers import rel_error
from tests.zoo._dinov2 import dinov2_interpolate
from tests.zoo._torchgeo import torchgeo_models

SMALL = {"depth": 2, "dim": 128, "num_heads": 2, "attn_dim": 96, "channel_heads": 4}
# torchgeo builds a ViT-B backbone (768 wide, 12 heads) and 16 channel heads: its comparison model keeps those
TORCHGEO_SIZES = {"depth": 1, "attn_dim": 96}
WIDTHS = (1.0, 0.5, 0.1, 0.001)
# Sentinel-2 B04, B03 (micrometres), Sentinel-1 VV (orbit unknown) and VH (ascending)
WAVES = (0.6646, 0.5598, "VV", "VH_asc")
CHN_IDS = (664, 559, -1, -6)


@pytest.fixture(scope="module")
def model():
    with pytest.warns(UserWarning, match="random weights"):
        return slimkern.load("panopticon_vitb14", **SMALL)


def images(bands: int = 4, size: int = 224, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, bands, size, size)


# -- the released file -------------------------------------------------------------------------------------


def test_released_file_round_trip(tmp_path, model):
    state = model.state_dict()
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 128)  # the 518 px table of the released teacher
    path = tmp_path / "panopticon_vitb14_teacher.pth"
    torch.save(state | {"mask_token": torch.randn(1, 128)}, path)
    loaded = slimkern.load("panopticon_vitb14", weights=path, **SMALL)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = images()
    assert torch.equal(loaded.run(x, 0.1, wavelengths=WAVES), model.run(x, 0.1, wavelengths=WAVES))


def test_key_names_and_parameters_match_torchgeo():
    tg = torchgeo_models().panopticon
    with torch.device("meta"):
        reference = tg.Panopticon().model
    ours = build_meta("panopticon_vitb14")
    theirs = {k: p.shape for k, p in reference.named_parameters()}
    mine = {k: p.shape for k, p in ours.named_parameters()}
    assert mine.keys() == theirs.keys()
    # torchgeo holds the table already resized to 224 px; the released file (and slimkern) keep 518 px
    assert mine.pop("pos_embed") == (1, 1370, 768) and theirs.pop("pos_embed") == (1, 257, 768)
    assert mine == theirs
    assert sum(p.numel() for p in ours.parameters()) == 98_120_448 + (1370 - 257) * 768


# -- slimmed runs against the reference ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
def test_engine_matches_reference(model, mode):
    x = images()
    for width in WIDTHS if mode == "attn+ffn" else (0.5, 0.001):
        fast = model.run(x, width, mode=mode, output="tokens", wavelengths=WAVES)
        assert fast.shape == (1, 257, 128)
        ref = model.reference(x, width, mode=mode, output="tokens", wavelengths=WAVES)
        assert rel_error(fast, ref) < 1e-5, width
    pooled = model.run(x, 0.1, mode=mode, wavelengths=WAVES)
    assert rel_error(pooled, model.reference(x, 0.1, mode=mode, wavelengths=WAVES)) < 1e-5


def test_any_band_count_and_other_sizes(model):
    one = images(1, 168)
    fast = model.run(one, 0.5, output="tokens", wavelengths=[0.842])
    assert fast.shape == (1, 1 + 12 * 12, 128)
    assert rel_error(fast, model.reference(one, 0.5, output="tokens", wavelengths=[0.842])) < 1e-5
    x = images(6, 280)
    fast = model.run(x, 0.1, wavelengths=[0.49, 0.56, 0.665, 0.842, 1.61, 2.19])
    assert rel_error(fast, model.reference(x, 0.1, wavelengths=[0.49, 0.56, 0.665, 0.842, 1.61, 2.19])) < 1e-5


def test_channel_inputs_matter(model):
    x = images()
    base = model.run(x, 1.0, wavelengths=WAVES)
    for other in ((0.6656, 0.5598, "VV", "VH_asc"), (0.6646, 0.5598, "HH", "VH_asc"),
                  (0.6646, 0.5598, "VV", "VH_desc"), (0.6646, 0.5598, "VV", "VH")):
        assert rel_error(model.run(x, 1.0, wavelengths=other), base) > 1e-4, other
    # ids are whole nanometres: 0.66461 um and 0.6646 um are both 664 nm
    assert torch.equal(model.run(x, 1.0, wavelengths=(0.66461, 0.5598, "VV", "VH_asc")), base)
    assert model.channel_ids((1.005, 0.0005, "HV_desc"), 3) == (1005.0, 0.0, -12.0)


# -- width 1.0 against torchgeo -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base():
    with pytest.warns(UserWarning, match="random weights"):
        return slimkern.load("panopticon_vitb14", **TORCHGEO_SIZES)


@pytest.fixture(scope="module")
def torchgeo_panopticon(base):
    """torchgeo's Panopticon with the test model's depth and channel-attention width, fed the same weights with
    the position table interpolated to 224 px by the official DINOv2 run-time rule."""
    tg = torchgeo_models().panopticon.Panopticon(attn_dim=TORCHGEO_SIZES["attn_dim"], embed_dim=768, img_size=224)
    tg.model.blocks = tg.model.blocks[:TORCHGEO_SIZES["depth"]]
    state = base.state_dict()
    state["pos_embed"] = dinov2_interpolate(state["pos_embed"], 224, 224, 14)
    tg.model.load_state_dict(state, strict=True)
    return tg.double().eval()


def test_full_width_equals_torchgeo(base, torchgeo_panopticon):
    x = images(batch=2)
    inputs = {"imgs": x.double(), "chn_ids": torch.tensor([CHN_IDS] * 2)}  # integer ids, as the README's example
    with torch.no_grad():
        tokens = torchgeo_panopticon.model.forward_features(dict(inputs, chn_ids=inputs["chn_ids"].clone()))
        pooled = torchgeo_panopticon(dict(inputs, chn_ids=inputs["chn_ids"].clone()))  # ChnEmb edits ids in place
    assert rel_error(base.run(x, 1.0, output="tokens", wavelengths=WAVES), tokens) < 1e-5
    assert rel_error(base.run(x, 1.0, wavelengths=WAVES), pooled) < 1e-5
    assert rel_error(base.reference(x, 1.0, wavelengths=WAVES), pooled) < 1e-12


def test_channel_embeddings_equal_torchgeo(base, torchgeo_panopticon):
    chnemb = torchgeo_panopticon.model.patch_embed.chnfus.chnemb
    ids = tuple(range(-1, -13, -1)) + (443, 2202)  # every SAR id, two optical ones
    with torch.no_grad():
        want = chnemb(torch.tensor([ids]))[0]
    assert rel_error(base.channel_embedding(tuple(float(i) for i in ids), torch.float64), want) < 1e-12


# -- FLOPs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, mode, bands", [(1.0, "attn+ffn", 4), (0.001, "attn+ffn", 4), (0.5, "ffn", 2)])
def test_flops_match_flop_counter(width, mode, bands):
    # flops() counts the stem for arch.in_chans bands
    with pytest.warns(UserWarning, match="random weights"):
        model = slimkern.load("panopticon_vitb14", in_chans=bands, **SMALL)
    with FlopCounterMode(display=False) as counter:
        model.reference(images(bands), width, mode=mode, wavelengths=WAVES[:bands])
    assert model.flops(width, mode=mode) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_full_size_compute_is_dominated_by_the_stem():
    model = build_meta("panopticon_vitb14")
    assert model.cfg.arch.in_chans == 12
    stem = model.stem_flops(224, 224)
    # key/value projections 2304 x 2304 for each of 12 bands x 256 patches are 95 % of the unslimmed stem
    assert 2 * 2 * 256 * 12 * 2304**2 / stem == pytest.approx(0.946, abs=0.005)
    assert 0.55 < stem / model.flops() < 0.65
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.1, 0.001)]
    assert rel == sorted(rel, reverse=True) and 0.6 < rel[3] < 0.61


# -- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs(model):
    x = images()
    with pytest.raises(TypeError, match=r"needs wavelengths=\[\.\.\.\], one per band of x \(4 bands\)"):
        model.run(x)
    with pytest.raises(ValueError, match="got 3 wavelengths for 4 bands"):
        model.run(x, wavelengths=WAVES[:3])
    with pytest.raises(ValueError, match="wavelengths 664.6, 559.8 um are outside 0.3-30 um: nanometres where"):
        model.run(x, wavelengths=[664.6, 559.8, "VV", "VH"])  # run()'s input check
    with pytest.raises(ValueError, match="look like nanometres; Panopticon takes micrometres"):
        model.run(x, wavelengths=[664.6, 559.8, "VV", "VH"], check="off")
    with pytest.raises(ValueError, match="unknown SAR band 'VVH'; expected one of VV, VH, HH, HV, VV_asc"):
        model.run(x, wavelengths=[0.66, 0.56, "VVH", "VH"])
    with pytest.raises(ValueError, match="optical wavelengths must be positive micrometres"):
        model.run(x, wavelengths=[0.66, -1.0, "VV", "VH"])
    with pytest.raises(TypeError, match="must be a list"):
        model.run(x, wavelengths="VV")
    with pytest.raises(ValueError, match="image size 224x200 is not a positive multiple of the patch size 14"):
        model.run(images(size=224)[..., :200], wavelengths=WAVES)
    with pytest.raises(TypeError, match="takes wavelengths; got unexpected chn_ids"):
        model.run(x, wavelengths=WAVES, chn_ids=CHN_IDS)
