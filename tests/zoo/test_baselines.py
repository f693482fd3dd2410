"""CV baselines (MAE ViT-B/16, DINOv2 ViT-B/14): checkpoint files, slimmed runs, FLOPs, bad inputs, and width
1.0 against timm models built with ``timm.create_model(..., pretrained=False)`` fed the same state dict."""

import argparse

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.zoo.dinov2 import interpolate_pos_embed
from slimkern.zoo.pos_embed import sincos_2d
from tests.helpers import TINY, rel_error, tiny_model
from tests.zoo._dinov2 import dinov2_interpolate

WIDTHS = (1.0, 0.5, 0.1, 0.001)
TIMM = {"mae_vitb16": "vit_base_patch16_224.mae", "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m"}


@pytest.fixture(scope="module")
def mae():
    return tiny_model("mae_vitb16")


@pytest.fixture(scope="module")
def dino():
    return tiny_model("dinov2_vitb14")


def images(size: int = 224, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size)


def timm_vit(model: slimkern.SlimModel, state: dict | None = None, **kwargs):
    """timm's model of the baseline at the test model's sizes, loaded strictly with the same state dict."""
    arch = model.cfg.arch
    vit = timm.create_model(TIMM[model.cfg.name], pretrained=False, embed_dim=arch.dim, depth=arch.depth,
                            num_heads=arch.num_heads, **kwargs)
    vit.load_state_dict(model.state_dict() if state is None else state, strict=True)
    return vit.double().eval()


# -- checkpoint files -----------------------------------------------------------------------------------


def test_mae_official_container(tmp_path, mae):
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": mae.state_dict(), "args": argparse.Namespace(model="mae_vit_base_patch16")}, path)
    loaded = slimkern.load("mae_vitb16", weights=path, **TINY)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, mae.state_dict()[key]), key
    timm_file = tmp_path / "model.pth"  # timm's hub copy: flat, same names
    torch.save(mae.state_dict(), timm_file)
    x = images()
    assert torch.equal(slimkern.load("mae_vitb16", weights=timm_file, **TINY).run(x, 0.1), mae.run(x, 0.1))


def test_dinov2_official_file(tmp_path, dino):
    assert dino.pos_embed.shape == (1, 1 + 37 * 37, 128)  # the 518 px table of dinov2_vitb14_pretrain.pth
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(dino.state_dict() | {"mask_token": torch.randn(1, 128)}, path)
    loaded = slimkern.load("dinov2_vitb14", weights=path, **TINY)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, dino.state_dict()[key]), key
    x = images()
    assert torch.equal(loaded.run(x, 0.5), dino.run(x, 0.5))


def test_fine_tuned_mae_file_is_refused(mae):
    # a fine-tuned MAE (fc_norm + head, no norm) is not the pretrained encoder: say so rather than guess
    state = {k: v for k, v in mae.state_dict().items() if not k.startswith("norm.")}
    state |= {"fc_norm.weight": torch.ones(128), "fc_norm.bias": torch.zeros(128), "head.weight": torch.randn(10, 128)}
    with pytest.raises(ValueError, match=r"missing keys: norm\.weight, norm\.bias.*\n.*unexpected keys: fc_norm"):
        slimkern.load("mae_vitb16", weights=state, **TINY)


# -- slimmed runs against the reference ------------------------------------------------------------------


@pytest.mark.parametrize("name, mode, widths", [
    ("mae_vitb16", "attn+ffn", WIDTHS), ("dinov2_vitb14", "attn+ffn", WIDTHS),
    ("dinov2_vitb14", "attn", (0.5, 0.001)), ("dinov2_vitb14", "ffn", (0.5, 0.001)),
])
def test_engine_matches_reference(mae, dino, name, mode, widths):
    model = mae if name == "mae_vitb16" else dino
    x = images()
    for width in widths:
        fast = model.run(x, width, mode=mode, output="tokens")
        assert rel_error(fast, model.reference(x, width, mode=mode, output="tokens")) < 1e-5, width
    assert rel_error(model.run(x, 0.1, mode=mode), model.reference(x, 0.1, mode=mode)) < 1e-5
    assert model.run(x, 0.1).shape == (1, 128)


# -- width 1.0 against timm -------------------------------------------------------------------------------


def test_mae_full_width_equals_timm(mae):
    vit = timm_vit(mae)
    assert vit.global_pool == "token" and isinstance(vit.fc_norm, torch.nn.Identity)  # pooled: normed cls token
    x = images(batch=2)
    with torch.no_grad():
        tokens, pooled = vit.forward_features(x.double()), vit(x.double())
    assert rel_error(mae.run(x, 1.0, output="tokens"), tokens) < 1e-5
    assert rel_error(mae.run(x, 1.0), pooled) < 1e-5
    assert rel_error(mae.reference(x, 1.0), pooled) < 1e-12


def test_dinov2_full_width_equals_timm_at_518(dino):
    vit = timm_vit(dino)  # timm's default: 518 px, the stored table as is
    x = images(518)
    with torch.no_grad():
        tokens, pooled = vit.forward_features(x.double()), vit(x.double())
    assert tokens.shape == (1, 1 + 37 * 37, 128)
    assert rel_error(dino.run(x, 1.0, output="tokens"), tokens) < 1e-5
    assert rel_error(dino.run(x, 1.0), pooled) < 1e-5


def test_dinov2_full_width_equals_timm_at_224(dino):
    # default input 224 px: the official DINOv2 code interpolates the 37 x 37 table at run time
    state = dino.state_dict()
    state["pos_embed"] = dinov2_interpolate(state["pos_embed"], 224, 224, 14)
    vit = timm_vit(dino, state, img_size=224)
    x = images(224, batch=2)
    with torch.no_grad():
        tokens, pooled = vit.forward_features(x.double()), vit(x.double())
    assert rel_error(dino.run(x, 1.0, output="tokens"), tokens) < 1e-5
    assert rel_error(dino.run(x, 1.0), pooled) < 1e-5


def test_timm_resizes_dinov2_positions_differently():
    # timm's create_model(img_size=224) / dynamic_img_size resample by output size with antialias; slimkern
    # follows the official DINOv2 rule (scale factor with +0.1 offset, no antialias). On a smooth 37 x 37
    # table (sin-cos, like a trained one) the two 16 x 16 tables differ by a few per cent
    pos = torch.cat([torch.zeros(1, 128, dtype=torch.float64), sincos_2d(128, 37, 37)])[None]
    official = interpolate_pos_embed(pos, (16, 16), 0.1, False)
    timm_style = timm.layers.resample_abs_pos_embed(pos, [16, 16], num_prefix_tokens=1)
    assert 0.01 < rel_error(timm_style, official) < 0.1


# -- FLOPs and sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, width, size", [("mae_vitb16", 0.1, 224), ("dinov2_vitb14", 1.0, 224),
                                                ("dinov2_vitb14", 0.001, 224), ("dinov2_vitb14", 0.5, 518)])
def test_flops_match_flop_counter(mae, dino, name, width, size):
    model = mae if name == "mae_vitb16" else dino
    x = images(size)
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width)
    assert model.flops(width, image_size=size) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_full_size_compute():
    mae, dino = build_meta("mae_vitb16"), build_meta("dinov2_vitb14")
    # SLIMMING.md section 4: ViT-B/16 at 224 px with 12 bands is 35.8 GFLOP and s = 0.1 gives ~12.1 %;
    # the RGB model has 9 bands fewer in its unslimmed stem (2 * 196 patches * 9 * 16 * 16 * 768)
    extra = 2 * 196 * 9 * 16 * 16 * 768
    assert (mae.flops() + extra) / 1e9 == pytest.approx(35.8, rel=0.01)
    assert (mae.flops(0.1) + extra) / (mae.flops() + extra) == pytest.approx(0.121, abs=0.002)
    # DINOv2 at its default 224 px: 257 tokens; at 518 px 1370 tokens (the position table's size)
    assert dino.flops() / 1e9 == pytest.approx(46.32, rel=0.01)
    assert dino.flops(image_size=518) / dino.flops() > 5
    for model in (mae, dino):
        rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.1, 0.001)]
        assert rel == sorted(rel, reverse=True) and rel[3] < 0.015


@pytest.mark.parametrize("name, params", [("mae_vitb16", 85_798_656), ("dinov2_vitb14", 86_579_712)])
def test_full_size_parameters_match_timm(name, params):
    model = build_meta(name)
    with torch.device("meta"):
        vit = timm.create_model(TIMM[name], pretrained=False)
    assert {k: p.shape for k, p in model.named_parameters()} == {k: p.shape for k, p in vit.named_parameters()}
    assert sum(p.numel() for p in model.parameters()) == params


# -- registry and bad inputs ------------------------------------------------------------------------------


def test_registry_names_and_metadata():
    for name, alias in TIMM.items():
        cfg = slimkern.registry.get_cfg(name)
        assert slimkern.registry.get_cfg(alias) is cfg
        assert cfg.bands == ("R", "G", "B") and cfg.mean == (0.485, 0.456, 0.406)
        assert cfg.spec.scale == 1 / 255 and cfg.spec.unit == "DN"
        assert cfg.arch.img_size == 224
    assert slimkern.registry.get_cfg("dinov2_vitb14").arch.pos_embed_size == 518


def test_bad_inputs(mae, dino):
    with pytest.raises(ValueError, match=r"x has 4 bands .* expected 3 in this order: R, G, B"):
        mae.run(torch.randn(1, 4, 224, 224))
    with pytest.raises(ValueError, match=r"image size 230x224 is not a positive multiple of the patch size 14"):
        dino.run(torch.randn(1, 3, 230, 224))
    with pytest.raises(ValueError, match="image size 100x100 is not a positive multiple of the patch size 16"):
        mae.flops(image_size=100)
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected gsd"):
        dino.run(images(), gsd=10.0)
