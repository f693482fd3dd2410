"""SoftCon ViT-S/14 and ViT-B/14 (S2, S1) and the DINOv2 family they use: checkpoint files, slimmed runs,
position-embedding interpolation, FLOPs, bad inputs, and width 1.0 against torchgeo's builders (timm
``vit_{small,base}_patch14_dinov2``)."""

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.zoo.dinov2 import DinoV2Arch, interpolate_pos_embed
from tests.helpers import TINY, rel_error, tiny_model
from tests.zoo._dinov2 import dinov2_interpolate
from tests.zoo._torchgeo import torchgeo_models

NAMES = ("softcon_vits14_s2", "softcon_vitb14_s2", "softcon_vits14_s1", "softcon_vitb14_s1")
WIDTHS = (1.0, 0.5, 0.1, 0.001)


@pytest.fixture(scope="module")
def s2():
    return tiny_model("softcon_vits14_s2")


@pytest.fixture(scope="module")
def s1():
    return tiny_model("softcon_vitb14_s1")


def images(bands: int = 13, size: int = 224, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, bands, size, size)  # standardised inputs


def official_file(model: slimkern.SlimModel) -> dict:
    """What the README's strict ``load_state_dict`` implies: a flat DINOv2 state dict with ``mask_token``."""
    return model.state_dict() | {"mask_token": torch.randn(1, model.dim)}


# -- checkpoint files -----------------------------------------------------------------------------------


def test_official_file_round_trip(tmp_path, s2):
    path = tmp_path / "B13_vits14_softcon.pth"
    torch.save(official_file(s2), path)
    loaded = slimkern.load("softcon_vits14_s2", weights=path, **TINY)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, s2.state_dict()[key]), key
    assert "mask_token" not in loaded.state_dict()
    x = images()
    assert torch.equal(loaded.run(x, 0.1), s2.run(x, 0.1))


def test_torchgeo_enc_file(tmp_path, s1):
    path = tmp_path / "B2_vitb14_softcon_enc.pth"
    torch.save(s1.state_dict(), path)  # torchgeo's copy: the same keys without mask_token
    loaded = slimkern.load("softcon_vitb14_s1", weights=path, **TINY)
    x = images(2)
    assert torch.equal(loaded.run(x, 0.5), s1.run(x, 0.5))


def test_missing_layer_scale_is_an_error(s2):
    state = {k: v for k, v in s2.state_dict().items() if k != "blocks.1.ls2.gamma"}
    with pytest.raises(ValueError, match=r"1 missing keys: blocks\.1\.ls2\.gamma"):
        slimkern.load("softcon_vits14_s2", weights=state, **TINY)


# -- slimmed runs against the reference ------------------------------------------------------------------


@pytest.mark.parametrize("name, mode", [("softcon_vits14_s2", "attn+ffn"), ("softcon_vits14_s2", "attn"),
                                        ("softcon_vits14_s2", "ffn"), ("softcon_vitb14_s1", "attn+ffn")])
def test_engine_matches_reference(s2, s1, name, mode):
    model = s2 if name.endswith("s2") else s1
    x = images(len(model.cfg.bands))
    for width in WIDTHS:
        fast = model.run(x, width, mode=mode, output="tokens")
        assert fast.shape == (1, 257, 128)
        assert rel_error(fast, model.reference(x, width, mode=mode, output="tokens")) < 1e-5, width
    assert rel_error(model.run(x, 0.1, mode=mode), model.reference(x, 0.1, mode=mode)) < 1e-5


def test_layer_scale_is_applied(s2):
    x = images()
    state = s2.state_dict()
    state["blocks.0.ls1.gamma"] = state["blocks.0.ls1.gamma"] * 2
    other = slimkern.load("softcon_vits14_s2", weights=state, **TINY)
    assert rel_error(other.run(x, 0.5), s2.run(x, 0.5)) > 1e-3
    assert rel_error(other.run(x, 0.5), other.reference(x, 0.5)) < 1e-5


def test_other_image_size(s2):
    x = images(size=168)
    fast = s2.run(x, 0.5, output="tokens")
    assert fast.shape == (1, 1 + 12 * 12, 128)
    assert rel_error(fast, s2.reference(x, 0.5, output="tokens")) < 1e-5


# -- DINOv2 position-embedding interpolation against the official code ------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (280, 280), (168, 308), (112, 448), (518, 518)])
@pytest.mark.parametrize("offset, antialias", [(0.1, False), (0.0, True)])
def test_interpolation_matches_official_dinov2(size, offset, antialias):
    pos = torch.randn(1, 1 + 16 * 16, 32)
    h, w = size
    got = interpolate_pos_embed(pos, (h // 14, w // 14), offset, antialias)
    assert got.shape == (1, 1 + (h // 14) * (w // 14), 32)
    assert torch.equal(got, dinov2_interpolate(pos, h, w, 14, offset, antialias))


def test_interpolation_early_out_and_offset_effect():
    pos = torch.randn(1, 1 + 16 * 16, 32)
    assert interpolate_pos_embed(pos, (16, 16)) is pos
    # same patch count, non-square image: DINOv2 interpolates (to 8 x 32)
    assert not torch.equal(interpolate_pos_embed(pos, (8, 32))[:, 1:17], pos[:, 1:17])
    # the +0.1 offset samples other positions than a plain resize to the same grid
    assert rel_error(interpolate_pos_embed(pos, (20, 20)), interpolate_pos_embed(pos, (20, 20), offset=0.0)) > 1e-3


def test_dinov2_arch_validation():
    with pytest.raises(ValueError, match="pos_embed_size 500 is not a multiple of patch_size 14"):
        DinoV2Arch(pos_embed_size=500)
    assert DinoV2Arch(img_size=224, pos_embed_size=518).pos_grid == 37 and DinoV2Arch().pos_grid == 16


# -- width 1.0 against torchgeo -------------------------------------------------------------------------


def torchgeo_vit(model: slimkern.SlimModel, state: dict | None = None, img_size: int = 224):
    """torchgeo's ``vit_{small,base}_patch14_dinov2`` (timm) with the model's sizes and the same weights."""
    arch = model.cfg.arch
    builder = "vit_small_patch14_dinov2" if "vits14" in model.cfg.name else "vit_base_patch14_dinov2"
    vit = getattr(torchgeo_models(), builder)(None, in_chans=arch.in_chans, img_size=img_size, embed_dim=arch.dim,
                                              depth=arch.depth, num_heads=arch.num_heads)
    vit.load_state_dict(model.state_dict() if state is None else state, strict=True)
    return vit.double().eval()


@pytest.mark.parametrize("which", ["s2", "s1"])
def test_full_width_equals_torchgeo(s2, s1, which):
    model = s2 if which == "s2" else s1
    x = images(len(model.cfg.bands), batch=2)
    vit = torchgeo_vit(model)
    with torch.no_grad():
        tokens = vit.forward_features(x.double())
        pooled = vit(x.double())
    assert rel_error(model.run(x, 1.0, output="tokens"), tokens) < 1e-5
    assert rel_error(model.run(x, 1.0), pooled) < 1e-5
    assert rel_error(model.reference(x, 1.0), pooled) < 1e-12


def test_full_width_equals_torchgeo_at_another_size(s2):
    # SoftCon's own (DINOv2) code interpolates at run time; timm is built for 280 px with that table
    state = s2.state_dict()
    state["pos_embed"] = dinov2_interpolate(state["pos_embed"], 280, 280, 14)
    vit = torchgeo_vit(s2, state, img_size=280)
    x = images(size=280)
    with torch.no_grad():
        want = vit(x.double())
    assert rel_error(s2.run(x), want) < 1e-5


# -- FLOPs and sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, width, size", [("attn+ffn", 1.0, 224), ("attn+ffn", 0.001, 224),
                                                ("attn", 0.1, 224), ("ffn", 0.5, 280)])
def test_flops_match_flop_counter(s2, mode, width, size):
    x = images(size=size)
    with FlopCounterMode(display=False) as counter:
        s2.reference(x, width, mode=mode)
    assert s2.flops(width, mode=mode, image_size=size) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_full_size_relative_compute():
    small, base = build_meta("softcon_vits14_s2"), build_meta("softcon_vitb14_s2")
    # 257 tokens: ViT-S/14 ~12.6 GFLOP, ViT-B/14 ~47.1 GFLOP at 224 px with 13 bands
    assert small.flops() / 1e9 == pytest.approx(12.63, rel=0.01)
    assert base.flops() / 1e9 == pytest.approx(47.09, rel=0.01)
    for model in (small, base):
        rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.1, 0.001)]
        assert rel == sorted(rel, reverse=True) and rel[2] == pytest.approx(0.12, abs=0.015) and rel[3] < 0.05
    # the unslimmed stem sets the floor: two SAR bands instead of 13 lower it
    assert build_meta("softcon_vitb14_s1").relative_flops(0.001) < base.relative_flops(0.001)


@pytest.mark.parametrize("name, params", [("softcon_vits14_s2", 22_381_824), ("softcon_vitb14_s2", 87_230_976),
                                          ("softcon_vits14_s1", 21_553_920), ("softcon_vitb14_s1", 85_575_168)])
def test_full_size_parameters_match_spec_and_timm(name, params):
    model = build_meta(name)
    arch = model.cfg.arch
    # model_specs.json counts the training-only mask_token ([1, D]), which slimkern drops
    assert sum(p.numel() for p in model.parameters()) == params - arch.dim
    timm_name = "vit_small_patch14_dinov2" if arch.dim == 384 else "vit_base_patch14_dinov2"
    with torch.device("meta"):
        vit = timm.create_model(timm_name, pretrained=False, in_chans=arch.in_chans, img_size=224)
    assert {k: p.shape for k, p in model.named_parameters()} == {k: p.shape for k, p in vit.named_parameters()}


# -- registry and bad inputs ------------------------------------------------------------------------------


def test_registry_metadata():
    s2 = slimkern.registry.get_cfg("softcon_vitb14_s2")
    assert s2.bands[8] == "B8A" and len(s2.bands) == 13 and s2.mean[10] == 22.0 and s2.std[10] == 47.5
    s1 = slimkern.registry.get_cfg("softcon_vits14_s1")
    assert s1.bands == ("VV", "VH") and s1.mean == (-12.59, -20.26) and s1.spec.unit == "dB"
    for name in NAMES:
        arch = slimkern.registry.get_cfg(name).arch
        assert (arch.patch_size, arch.pos_grid, arch.layer_scale, arch.interpolate_offset) == (14, 16, True, 0.1)


def test_bad_inputs(s2, s1):
    with pytest.raises(ValueError, match=r"x has 12 bands .* expected 13 in this order: B01, B02"):
        s2.run(torch.randn(1, 12, 224, 224))
    with pytest.raises(ValueError, match=r"x has 13 bands .* expected 2 in this order: VV, VH"):
        s1.run(torch.randn(1, 13, 224, 224))
    with pytest.raises(ValueError, match="image size 224x230 is not a positive multiple of the patch size 14"):
        s2.run(torch.randn(1, 13, 224, 230))
    with pytest.raises(TypeError, match="takes no extra inputs"):
        s1.run(images(2), wavelengths=[5.4, 5.4])
