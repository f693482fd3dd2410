"""SatMAE multispectral group-channel encoders (``satmae_vitl_ms``, ``satmae_vitb_ms``).

The width-1.0 check is against an independent re-implementation written from a reading of the official
``models_mae_group_channels.py::forward_encoder`` (sustainlab-group/SatMAE@e31c11fa; no pip package
exists): timm blocks, one ``nn.Conv2d`` per group, the official stack / concat / view sequence, and
MAE sin-cos tables written here in numpy. The normalisation check re-implements
``util/datasets.py::SentinelNormalize`` + ``ToTensor`` + ``--dropped_bands 0 9 10`` on 13 bands.
"""

import argparse
import json
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from tests.helpers import MODEL_SPECS, TINY, rel_error

SPECS = MODEL_SPECS
NAMES = {"satmae_vitl_ms": "satmae_ms_group_vitl", "satmae_vitb_ms": "satmae_ms_group_vitb"}
SMALL = {**TINY, "channel_embed": 32}  # dim 128 = 96 position dims + 32 group dims
GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
WIDTHS = (1.0, 0.5, 0.1, 0.001)
MODES = ("attn+ffn", "attn", "ffn")


def small_model(**overrides) -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load("satmae_vitl_ms", **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def model():
    return small_model()


def raw_dn(batch: int, size: int = 96, seed: int = 0) -> torch.Tensor:
    """Image-like raw digital numbers of the 10 kept bands (spatially smooth, some values clipped)."""
    g = torch.Generator().manual_seed(seed)
    cfg = slimkern.registry.get_cfg("satmae_vitl_ms")
    mean, std = torch.tensor(cfg.mean).view(1, -1, 1, 1), torch.tensor(cfg.std).view(1, -1, 1, 1)
    coarse = torch.randn(batch, 10, size // 8, size // 8, generator=g)
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (mean + 1.2 * std * (smooth + 0.3 * torch.randn(batch, 10, size, size, generator=g))).clamp(min=0)


@pytest.fixture(scope="module")
def images(model):
    return model.normalize(raw_dn(2))


# -- checkpoint format -------------------------------------------------------------------------------
def decoder_keys(dim: int) -> dict[str, torch.Tensor]:
    """The official non-encoder keys (names and shapes of model_specs.json) as cheap stride-0 tensors."""
    spec = SPECS["satmae_ms_group_vitl"]["non_encoder_state_dict"]
    shapes = {k: (v if k != "decoder_embed.weight" else [v[0], dim]) for k, v in spec.items()}
    return {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}


def official_container(state: dict, dim: int) -> dict:
    """What SatMAE's ``misc.save_model`` writes for ``main_pretrain.py``: encoder + decoder under 'model'."""
    return {"model": {**state, **decoder_keys(dim)}, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "epoch": 199, "scaler": {"scale": 65536.0},
            "args": argparse.Namespace(model="mae_vit_large_patch16", patch_size=8, input_size=96)}


def test_official_container_round_trip(tmp_path, model, images):
    path = tmp_path / "pretrain-vit-large-e199.pth"
    state = model.state_dict()
    torch.save(official_container(state, 128), path)
    loaded = slimkern.load("satmae_vitl_ms", weights=path, **SMALL)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert set(loaded.state_dict()) == set(state)
    assert rel_error(loaded.run(images, 0.1), model.run(images, 0.1)) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_full_size_keys_shapes_and_parameters_match_spec(name):
    spec = SPECS[NAMES[name]]
    meta = build_meta(name)
    assert {k: list(p.shape) for k, p in meta.named_parameters()} == spec["state_dict"]
    assert sum(p.numel() for p in meta.parameters()) == spec["encoder_params"]
    # the official non-encoder keys are all dropped by the declared format
    drop = meta.cfg.checkpoint.drop_prefixes
    assert all(k.startswith(drop) for k in spec["non_encoder_state_dict"])
    assert not any(k.startswith(drop) for k in spec["state_dict"])


@pytest.mark.parametrize("name", NAMES)
def test_cfg_matches_spec(name):
    spec, cfg = SPECS[NAMES[name]], slimkern.registry.get_cfg(name)
    arch = cfg.arch
    assert (arch.dim, arch.depth, arch.num_heads, arch.patch_size, arch.img_size, arch.in_chans) == (
        spec["embed_dim"], spec["depth"], spec["num_heads"], spec["patch_size"], spec["default_img_size"],
        spec["in_chans"])
    assert [list(g) for g in arch.channel_groups] == spec["channel_groups"]
    assert arch.norm_eps == 1e-6 and arch.qkv_bias and not arch.layer_scale
    assert cfg.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert [[cfg.bands[i] for i in g] for g in arch.channel_groups] == [
        [b.replace("B", "B0") if len(b) == 2 else b for b in g] for g in spec["channel_groups_bands"]]
    assert build_meta(name).num_tokens(96, 96) == spec["num_tokens"] == 433
    assert cfg.checkpoint.container_keys == ("model",)
    # the DN statistics are the official 13-band ones without B01, B09, B10
    stats = spec["input_normalization"]
    mean13 = json.loads(stats[stats.index("mean=") + 5:stats.index("]", stats.index("mean=")) + 1])
    std13 = json.loads(stats[stats.index("std=") + 4:stats.index("]", stats.index("std=")) + 1])
    keep = [i for i in range(13) if i not in (0, 9, 10)]
    assert cfg.mean == tuple(mean13[i] for i in keep) and cfg.std == tuple(std13[i] for i in keep)


# -- the engine against the reference path -----------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_engine_matches_reference(model, images, width, mode):
    x = images[:1]  # the float64 reference over 433 tokens is the slow part: one image
    ref = model.reference(x, width, mode=mode, output="tokens")
    assert rel_error(model.run(x, width, mode=mode, output="tokens"), ref) < 1e-5
    assert rel_error(model.run(x, width, mode=mode), model.pool(ref)) < 1e-5


def test_shapes_and_widths_change_the_output(model, images):
    assert model.run(images, 0.5, output="tokens").shape == (2, 433, 128)
    assert model.run(images, 0.5).shape == (2, 128)
    outs = [model.run(images, w) for w in (1.0, 0.5, 0.1)]
    assert rel_error(outs[1], outs[0]) > 1e-2 and rel_error(outs[2], outs[1]) > 1e-2


def test_other_image_size_against_reference(model):
    x = model.normalize(raw_dn(1, size=64))[..., :48]  # 64 x 48 px: an 8 x 6 grid
    fast = model.run(x, 0.1, output="tokens")
    assert fast.shape == (1, 1 + 3 * 8 * 6, 128)
    assert rel_error(fast, model.reference(x, 0.1, output="tokens")) < 1e-5


# -- FLOPs -------------------------------------------------------------------------------------------
def counted_flops(model, x, width, mode) -> int:
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode)
    return counter.get_total_flops()


@pytest.mark.parametrize("width, mode", [(1.0, "attn+ffn"), (0.5, "attn"), (0.1, "ffn"), (0.001, "attn+ffn")])
def test_flops_match_flop_counter(model, images, width, mode):
    assert model.flops(width, mode=mode) == pytest.approx(counted_flops(model, images[:1], width, mode), rel=0.01)


def test_flops_match_flop_counter_at_another_size(model):
    x = model.normalize(raw_dn(1, size=64))
    assert model.flops(0.25, image_size=64) == pytest.approx(counted_flops(model, x, 0.25, "attn+ffn"), rel=0.01)


def test_full_size_compute():
    large, base = build_meta("satmae_vitl_ms"), build_meta("satmae_vitb_ms")
    # stem: 144 patches per group, each group's conv over its own bands (10 bands in all)
    assert large.stem_flops(96, 96) == 2 * 144 * 10 * 8 * 8 * 1024
    # 433 tokens: three times the patch tokens of a plain ViT-L/8 at 96 px
    n, d = 433, 1024
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * 4 * d
    assert large.flops() == large.stem_flops(96, 96) + 24 * block
    assert base.flops() < large.flops() / 3
    for m in (large, base):
        rel = [m.relative_flops(w) for w in (1.0, 0.5, 0.25, 0.1, 0.001)]
        assert rel[0] == 1.0 and rel == sorted(rel, reverse=True)
        assert 0.09 < rel[3] < 0.12 and rel[4] < 0.02
        assert 0.55 < m.relative_flops(0.001, mode="attn") < 0.75
        assert 0.25 < m.relative_flops(0.001, mode="ffn") < 0.45


# -- bad inputs --------------------------------------------------------------------------------------
def test_bad_inputs(model, images):
    with pytest.raises(ValueError, match=r"x has 13 bands .* expected 10 in this order: B02, B03, .*B8A, B11, B12"):
        model.run(torch.zeros(1, 13, 96, 96))
    with pytest.raises(ValueError, match="image size 100x96 is not a positive multiple of the patch size 8"):
        model.run(torch.zeros(1, 10, 100, 96))
    with pytest.raises(ValueError, match="not a positive multiple of the patch size 8"):
        model.flops(image_size=4)
    with pytest.raises(TypeError, match="satmae_vitl_ms takes no extra inputs; got unexpected res"):
        model.run(images, 0.5, res=1.0)
    with pytest.raises(TypeError, match="raw Sentinel-2 digital numbers"):
        model.normalize(torch.zeros(1, 10, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="x has 13 bands"):
        model.normalize(torch.zeros(1, 13, 8, 8))


def test_bad_architecture_overrides():
    with pytest.raises(ValueError, match="channel_embed must be even"):
        small_model(channel_embed=30)
    with pytest.raises(ValueError, match=r"use band indices \[10\] outside 0..9"):
        small_model(channel_groups=((0, 1, 10),))


# -- SentinelNormalize -------------------------------------------------------------------------------
def sentinel_normalize_official(img13: np.ndarray, mean: list, std: list) -> torch.Tensor:
    """util/datasets.py: SentinelNormalize on (h, w, 13) float32, ToTensor, then drop bands 0, 9, 10."""
    lo, hi = np.array(mean) - 2 * np.array(std), np.array(mean) + 2 * np.array(std)
    img = np.clip((img13 - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    tensor = torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255)  # ToTensor on uint8
    return tensor[[i for i in range(13) if i not in (0, 9, 10)]]


def test_normalize_is_official_sentinel_normalize(model):
    stats = SPECS["satmae_ms_group_vitl"]["input_normalization"]
    mean13 = json.loads(stats[stats.index("mean=") + 5:stats.index("]", stats.index("mean=")) + 1])
    std13 = json.loads(stats[stats.index("std=") + 4:stats.index("]", stats.index("std=")) + 1])
    rng = np.random.default_rng(0)
    img13 = (np.array(mean13) + 2.5 * np.array(std13) * rng.standard_normal((16, 16, 13))).astype(np.float32)
    want = sentinel_normalize_official(img13, mean13, std13)
    keep = [i for i in range(13) if i not in (0, 9, 10)]
    x10 = torch.from_numpy(img13.transpose(2, 0, 1)[keep].copy())[None]
    got = model.normalize(x10)
    assert got.dtype == torch.float32 and got.shape == (1, 10, 16, 16)
    torch.testing.assert_close(got[0], want, rtol=0, atol=1e-7)
    assert 0 < (got == 0).float().mean() < 0.5 and 0 < (got == 1).float().mean() < 0.5  # clipping was exercised
    # integer DN (GeoTIFF uint16 read as int32) gives the same
    torch.testing.assert_close(model.normalize(x10.round().int()), model.normalize(x10.round()), rtol=0, atol=0)


# -- width 1.0 against a re-implementation of the official forward_encoder -----------------------------
def mae_sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_sincos_2d(dim: int, grid: int) -> np.ndarray:
    """util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True): meshgrid puts w first."""
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([mae_sincos_1d(dim // 2, gw), mae_sincos_1d(dim // 2, gh)], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


class OfficialGroupChannelEncoder(nn.Module):
    """MaskedAutoencoderGroupChannelViT's encoder with mask_ratio 0 and no token shuffle, in float64."""

    def __init__(self, state: dict, dim: int, depth: int, heads: int, img_size: int, channel_embed: int) -> None:
        super().__init__()
        self.patch_embed = nn.ModuleList([nn.Conv2d(len(g), dim, 8, 8) for g in GROUPS])
        self.cls_token = nn.Parameter(state["cls_token"].clone())
        grid = img_size // 8
        if grid == 12:
            self.pos_embed = nn.Parameter(state["pos_embed"].clone())
        else:  # fine-tuning at another size: the model's own sin-cos for its grid replaces pos_embed
            self.pos_embed = nn.Parameter(torch.from_numpy(mae_sincos_2d(dim - channel_embed, grid))[None])
        self.channel_embed = nn.Parameter(state["channel_embed"].clone())
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # official keys patch_embed.{g}.proj.* belong to timm PatchEmbed's proj conv, here the conv itself
        own = {k.replace(".proj.", ".") if k.startswith("patch_embed") else k: v for k, v in state.items()
               if k.startswith(("patch_embed", "blocks", "norm"))}
        missing, unexpected = self.load_state_dict(own, strict=False)
        assert set(missing) == {"cls_token", "pos_embed", "channel_embed"} and not unexpected
        self.double().eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = torch.stack([self.patch_embed[i](x[:, g]).flatten(2).transpose(1, 2) for i, g in enumerate(GROUPS)],
                        dim=1)  # (N, G, L, D)
        _, _, length, dim = x.shape
        channel = self.channel_embed.unsqueeze(2).expand(-1, -1, length, -1)
        pos = self.pos_embed[:, 1:, :].unsqueeze(1).expand(-1, len(GROUPS), -1, -1)
        x = (x + torch.cat((pos, channel), dim=-1)).view(b, -1, dim)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


@pytest.mark.parametrize("size", [96, 64])
def test_full_width_equals_official_encoder(model, size):
    arch = model.cfg.arch
    official = OfficialGroupChannelEncoder(model.state_dict(), arch.dim, arch.depth, arch.num_heads, size,
                                           arch.channel_embed)
    x = model.normalize(raw_dn(2, size=size, seed=size))
    want = official(x.double())
    assert rel_error(model.reference(x, 1.0, output="tokens"), want) < 1e-12
    assert rel_error(model.run(x, 1.0, output="tokens"), want) < 1e-5
    assert rel_error(model.run(x, 1.0), want[:, 0]) < 1e-5


def test_group_embedding_is_concatenated_after_position():
    # with the official sin-cos tables (what every released file stores), tokens of equal position
    # but different group differ only in the last channel_embed dims before the blocks
    m = small_model(depth=1)
    with torch.no_grad():
        m.pos_embed.copy_(torch.from_numpy(mae_sincos_2d(96, 12))[None])
        m.channel_embed.copy_(torch.from_numpy(mae_sincos_1d(32, np.arange(3)))[None])
        for pe in m.patch_embed:
            pe.proj.weight.zero_()
            pe.proj.bias.zero_()
    tokens = m.embed(torch.zeros(1, 10, 96, 96))
    assert torch.equal(tokens[0, 0], m.cls_token[0, 0])
    g0, g1 = tokens[0, 1:145], tokens[0, 145:289]
    assert torch.equal(g0[:, :96], g1[:, :96]) and torch.equal(g0[:, :96], m.pos_embed[0, 1:])
    assert torch.equal(g0[:, 96:], m.channel_embed[0, :1].expand(144, -1))
