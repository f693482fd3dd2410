"""Scale-MAE ViT-L/16 (``scalemae_vitl``): GSD-scaled position embedding computed per input.

Width 1.0 is checked against torchgeo 0.8.1's ``ScaleMAE`` (a timm ``VisionTransformer`` whose
``_pos_embed`` is the res-scaled sin-cos), loaded with the same state dict, in float64, for several
``res`` values and two image sizes. torchgeo takes one ``res`` per batch, so per-sample ``res`` is
compared image by image. torchgeo comes with the ``compare`` extra; without it those tests skip.
"""

import argparse
import math
import warnings
from functools import partial

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.zoo.pos_embed import sincos_2d
from slimkern.zoo.vit import to_timm
from tests.helpers import MODEL_SPECS, TINY, rel_error
from tests.zoo._torchgeo import torchgeo_models

SPECS = MODEL_SPECS
WIDTHS = (1.0, 0.5, 0.1, 0.001)
MODES = ("attn+ffn", "attn", "ffn")


def small_model() -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("scalemae_vitl", **TINY)


@pytest.fixture(scope="module")
def model():
    return small_model()


def rgb_images(batch: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Image-like 8-bit RGB / 255 (smooth fields plus texture)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 16, size // 16, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def images(model):
    return model.normalize(rgb_images(2))


# -- checkpoint format -------------------------------------------------------------------------------
def official_container(state: dict) -> dict:
    """What Scale-MAE's ``misc.save_model`` writes: encoder + decoder + FPN/FCN heads under 'model'.

    The non-encoder keys use the prefixes of the official code (their inner names and shapes were not
    derived there; the sub-names below are placeholders under the real prefixes).
    """
    extra = {"mask_token": [1, 1, 512], "mask_token_decoder": [1, 1, 512], "decoder_embed.weight": [512, 128],
             "decoder_embed.bias": [512], "decoder_pos_embed": [1, 197, 512],
             "decoder_blocks.0.attn.qkv.weight": [1536, 512], "decoder_norm.weight": [512],
             "pos_emb_projection.weight": [512, 512], "fpn.fpn1.0.weight": [512, 512, 2, 2],
             "fcn.conv.0.weight": [256, 512, 3, 3], "fcn_high.conv.0.weight": [256, 512, 3, 3],
             "fcn_low.conv.0.weight": [256, 512, 3, 3]}
    model = {**state, **{k: torch.zeros(1).expand(shape) for k, shape in extra.items()}}
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 799,
            "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="mae_vit_large_patch16")}


def test_official_container_round_trip(tmp_path, model, images):
    path = tmp_path / "scalemae-vitlarge-800.pth"
    state = model.state_dict()
    torch.save(official_container(state), path)
    loaded = slimkern.load("scalemae_vitl", weights=path, **TINY)
    assert set(loaded.state_dict()) == set(state)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert rel_error(loaded.run(images, 0.1, res=2.0), model.run(images, 0.1, res=2.0)) == 0.0
    # torchgeo's encoder-only copy is a flat timm state dict: it loads as it is
    flat = tmp_path / "vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth"
    torch.save(state, flat)
    assert rel_error(slimkern.load("scalemae_vitl", weights=flat, **TINY).run(images, 0.1), model.run(images, 0.1)) == 0


def test_full_size_keys_shapes_and_parameters_match_spec():
    spec = SPECS["scalemae_vitl"]
    meta = build_meta("scalemae_vitl")
    assert {k: list(p.shape) for k, p in meta.named_parameters()} == spec["state_dict"]
    assert sum(p.numel() for p in meta.parameters()) == spec["encoder_params"]
    assert meta.cfg.checkpoint.drop_prefixes == tuple(spec["drop_key_prefixes"])
    assert meta.cfg.checkpoint.container_keys == ("model",)
    arch = meta.cfg.arch
    assert (arch.dim, arch.depth, arch.num_heads, arch.patch_size, arch.img_size, arch.in_chans) == (
        1024, 24, 16, 16, 224, 3)
    assert arch.norm_eps == 1e-6 and arch.qkv_bias and not arch.layer_scale
    assert meta.cfg.mean == (0.485, 0.456, 0.406) and meta.cfg.std == (0.229, 0.224, 0.225)


# -- the engine against the reference path -----------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_engine_matches_reference(model, images, width, mode):
    res = torch.tensor([1.0, 0.37])  # one GSD ratio per image
    ref = model.reference(images, width, mode=mode, output="tokens", res=res)
    assert rel_error(model.run(images, width, mode=mode, output="tokens", res=res), ref) < 1e-5
    assert rel_error(model.run(images, width, mode=mode, res=res), model.pool(ref)) < 1e-5


def test_res_and_width_change_the_output(model, images):
    outs = [model.run(images, w) for w in (1.0, 0.5, 0.1)]
    assert rel_error(outs[1], outs[0]) > 1e-2 and rel_error(outs[2], outs[1]) > 1e-2
    assert rel_error(model.run(images, 0.5, res=2.0), outs[1]) > 1e-3
    # the default is res = 1.0, as a float, an int, a 0-d or a per-image tensor
    for res in (1.0, 1, torch.tensor(1.0), torch.ones(2, dtype=torch.float64)):
        assert rel_error(model.run(images, 0.5, res=res), outs[1]) == 0.0


def test_per_sample_res_equals_separate_runs(model, images):
    both = model.run(images, 0.5, output="tokens", res=torch.tensor([0.5, 3.0]))
    assert rel_error(both[:1], model.run(images[:1], 0.5, output="tokens", res=0.5)) < 1e-6
    assert rel_error(both[1:], model.run(images[1:], 0.5, output="tokens", res=3.0)) < 1e-6


def test_stored_pos_embed_is_ignored_and_res_1_is_mae_sincos(model, images):
    changed = small_model()
    with torch.no_grad():
        changed.pos_embed.mul_(-3.0).add_(1.0)
    assert rel_error(changed.run(images, 0.5, res=1.5), model.run(images, 0.5, res=1.5)) == 0.0
    # res = 1: a timm ViT holding the plain MAE sin-cos table (zero class row) gives the same tokens
    vit = to_timm(model).double()
    with torch.no_grad():
        vit.pos_embed.copy_(torch.cat([torch.zeros(1, 128, dtype=torch.float64), sincos_2d(128, 14, 14)])[None])
        want = vit.forward_features(images.double())
    assert rel_error(model.reference(images, 1.0, output="tokens"), want) < 1e-12


def test_other_image_sizes(model):
    for height, width in ((96, 96), (64, 128)):
        x = model.normalize(rgb_images(1, 128))[..., :height, :width]
        fast = model.run(x, 0.1, output="tokens", res=2.0)
        assert fast.shape == (1, 1 + (height // 16) * (width // 16), 128)
        assert rel_error(fast, model.reference(x, 0.1, output="tokens", res=2.0)) < 1e-5


# -- FLOPs -------------------------------------------------------------------------------------------
def counted_flops(model, x, width, mode) -> int:
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode, res=2.0)
    return counter.get_total_flops()


@pytest.mark.parametrize("width, mode", [(1.0, "attn+ffn"), (0.5, "attn"), (0.1, "ffn"), (0.001, "attn+ffn")])
def test_flops_match_flop_counter(model, images, width, mode):
    assert model.flops(width, mode=mode) == pytest.approx(counted_flops(model, images[:1], width, mode), rel=0.01)


def test_flops_match_flop_counter_at_another_size(model):
    x = model.normalize(rgb_images(1, 160))
    assert model.flops(0.25, image_size=160) == pytest.approx(counted_flops(model, x, 0.25, "attn+ffn"), rel=0.01)


def test_full_size_compute():
    model, satmae = build_meta("scalemae_vitl"), build_meta("satmae_vitl_rgb")
    assert model.flops() / 1e9 == pytest.approx(123.1, rel=0.01)  # the ViT-L/16 of SatMAE-RGB and timm
    for width in (1.0, 0.25, 0.001):
        assert model.flops(width) == satmae.flops(width)
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.25, 0.1, 0.001)]
    assert rel[0] == 1.0 and rel == sorted(rel, reverse=True)
    assert rel[3] == pytest.approx(0.10, abs=0.005) and rel[4] < 0.01
    assert model.flops(image_size=448) > 4 * model.flops()  # 4x the tokens, attention grows faster


# -- bad inputs --------------------------------------------------------------------------------------
def test_bad_inputs(model, images):
    with pytest.raises(ValueError, match=r"x has 4 bands .* expected 3 in this order: R, G, B"):
        model.run(torch.zeros(1, 4, 224, 224))
    with pytest.raises(ValueError, match="image size 224x200 is not a positive multiple of the patch size 16"):
        model.run(torch.zeros(1, 3, 224, 200))
    with pytest.raises(TypeError, match="scalemae_vitl takes res; got unexpected gsd"):
        model.run(images, 0.5, gsd=1.0)
    with pytest.raises(TypeError, match="res must be a positive number or a \\[B\\] tensor of GSD ratios, got str"):
        model.run(images, 0.5, res="10m")
    with pytest.raises(TypeError, match="got bool"):
        model.run(images, 0.5, res=True)
    with pytest.raises(ValueError, match=r"one value per image \(\[2\]\), got shape \(3,\)"):
        model.run(images, 0.5, res=torch.ones(3))
    with pytest.raises(ValueError, match=r"one value per image \(\[2\]\), got shape \(2, 1\)"):
        model.run(images, 0.5, res=torch.ones(2, 1))
    for bad in (0.0, -1.0, math.nan, math.inf, torch.tensor([1.0, -2.0])):
        with pytest.raises(ValueError, match="res must be finite and > 0"):
            model.run(images, 0.5, res=bad)


# -- width 1.0 against torchgeo's ScaleMAE -----------------------------------------------------------
def torchgeo_model(model, img_size: int, res: float):
    arch = model.cfg.arch
    tg = torchgeo_models().ScaleMAE(res=res, img_size=img_size, patch_size=16, embed_dim=arch.dim,
                                       depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=4, qkv_bias=True,
                                       norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0)
    state = model.state_dict()
    # torchgeo resizes the stored table for another img_size; it is never read, so its own one does
    state["pos_embed"] = state["pos_embed"] if img_size == arch.img_size else tg.pos_embed.detach()
    tg.load_state_dict(state, strict=True)
    return tg.double().eval()


@pytest.mark.parametrize("size, res", [(224, 1.0), (224, 0.25), (224, 2.5), (128, 1.75)])
def test_full_width_equals_torchgeo(model, size, res):
    torch.set_float32_matmul_precision("highest")
    tg = torchgeo_model(model, size, res)
    x = model.normalize(rgb_images(2, size, seed=size))
    with torch.no_grad():
        want = tg.forward_features(x.double())
        pooled = tg.forward_head(want, pre_logits=True)  # timm's 'token' pooling: the class token
    assert rel_error(model.reference(x, 1.0, output="tokens", res=res), want) < 1e-12
    assert rel_error(model.run(x, 1.0, output="tokens", res=res), want) < 1e-5
    assert rel_error(model.run(x, 1.0, res=res), pooled) < 1e-5
    # per-image res: each image as torchgeo would embed it alone
    per_image = model.run(x, 1.0, output="tokens", res=torch.tensor([res, 2 * res]))
    tg.res = 2 * res
    with torch.no_grad():
        assert rel_error(per_image[1:], tg.forward_features(x[1:].double())) < 1e-5
