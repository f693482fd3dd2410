"""Prithvi-EO: official checkpoint layouts, the 3-D stem and TL encodings, slimming vs the reference, FLOPs, inputs.

TerraTorch (home of the official Prithvi code) is not installed and torchgeo has no Prithvi, so the width-1.0
checks compare against ``OfficialPrithvi`` below: a re-reading of TerraTorch ``prithvi_mae.py``
(``PrithviViT.forward_features``, ``get_3d_sincos_pos_embed``, ``_interpolate_pos_encoding``, ``TemporalEncoder``,
``LocationEncoder``), built from torch's ``Conv3d`` on ``[B, C, T, H, W]`` and timm's ``Block``.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from slimkern.checkpoints import check_state_dict, unwrap_state_dict
from slimkern.registry import get_cfg
from slimkern.zoo.pos_embed import sincos_1d
from slimkern.zoo.prithvi import HLS_BANDS, PrithviTL, sincos_3d
from tests.helpers import TINY, rel_error

# model_specs.json: dim, depth, heads, patch, pre-training frames, encoder_params (which count the stored pos_embed)
SPEC = {
    "prithvi_eo_v1_100": (768, 12, 12, 16, 3, 86_689_536),
    "prithvi_eo_v2_100_tl": (768, 12, 12, 16, 4, 86_840_066),
    "prithvi_eo_v2_300": (1024, 24, 16, 16, 4, 304_690_176),
    "prithvi_eo_v2_300_tl": (1024, 24, 16, 16, 4, 304_690_178),
    "prithvi_eo_v2_600": (1280, 32, 16, 14, 4, 632_500_480),
    "prithvi_eo_v2_600_tl": (1280, 32, 16, 14, 4, 632_500_482),
}
WIDTHS = (1.0, 0.5, 0.1, 0.001)
MODES = ("attn+ffn", "attn", "ffn")
TIME = [[[2021, 163]], [[2019, 0]]]  # (year, day of year) of each image's one frame
PLACE = [[38.9, -77.0], [-3.1, 120.5]]  # (latitude, longitude)


@functools.cache
def tiny(name: str, **overrides) -> slimkern.SlimModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkern.load(name, **{**TINY, **overrides})


def coords(model, batch: int = 2) -> dict:
    return dict(temporal_coords=TIME[:batch], location_coords=PLACE[:batch]) if isinstance(model, PrithviTL) else {}


def images(model, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
    size = size or (model.cfg.arch.img_size,) * 2
    return torch.randn(batch, 6, *size)


# -- official checkpoint files ----------------------------------------------------------------------
def official_file(name: str, arch, make, decoder_dim: int = 512, decoder_depth: int = 8) -> dict:
    """The official file's keys and shapes for ``name`` with architecture ``arch`` (model_specs.json pattern):
    encoder + MAE decoder, flat with no prefix (v1) or under ``encoder.`` / ``decoder.`` (v2)."""
    d, c, p, frames = arch.dim, arch.in_chans, arch.patch_size, SPEC[name][4]
    tokens, tl, v1 = 1 + frames * arch.grid**2, name.endswith("_tl"), name.startswith("prithvi_eo_v1")

    def blocks(prefix: str, dim: int, depth: int) -> dict:
        shapes = {"norm1.weight": [dim], "norm1.bias": [dim], "attn.qkv.weight": [3 * dim, dim],
                  "attn.qkv.bias": [3 * dim], "attn.proj.weight": [dim, dim], "attn.proj.bias": [dim],
                  "norm2.weight": [dim], "norm2.bias": [dim], "mlp.fc1.weight": [4 * dim, dim],
                  "mlp.fc1.bias": [4 * dim], "mlp.fc2.weight": [dim, 4 * dim], "mlp.fc2.bias": [dim]}
        return {f"{prefix}.{i}.{k}": v for i in range(depth) for k, v in shapes.items()}

    encoder = {"cls_token": [1, 1, d], "pos_embed": [1, tokens, d], "patch_embed.proj.weight": [d, c, 1, p, p],
               "patch_embed.proj.bias": [d], **blocks("blocks", d, arch.depth), "norm.weight": [d], "norm.bias": [d]}
    decoder = {"mask_token": [1, 1, decoder_dim], "decoder_pos_embed": [1, tokens, decoder_dim],
               "decoder_embed.weight": [decoder_dim, d], "decoder_embed.bias": [decoder_dim],
               **blocks("decoder_blocks", decoder_dim, decoder_depth), "decoder_norm.weight": [decoder_dim],
               "decoder_norm.bias": [decoder_dim], "decoder_pred.weight": [p * p * c, decoder_dim],
               "decoder_pred.bias": [p * p * c]}
    if tl:
        encoder |= {"temporal_embed_enc.scale": [1], "location_embed_enc.scale": [1]}
        decoder |= {"temporal_embed_dec.scale": [1], "location_embed_dec.scale": [1]}
    if not v1:
        encoder = {f"encoder.{k}": v for k, v in encoder.items()}
        decoder = {f"decoder.{k}": v for k, v in decoder.items()}
    return {k: make(k, v) for k, v in (encoder | decoder).items()}


@pytest.mark.parametrize("name", SPEC)
def test_names_and_cfg_match_the_spec(name):
    cfg = get_cfg(name)
    alias = name.replace("_100", "_100m").replace("_300", "_300m").replace("_600", "_600m")
    assert get_cfg(alias) is cfg and cfg.aliases == (alias,)
    dim, depth, heads, patch, _, _ = SPEC[name]
    arch = cfg.arch
    assert (arch.dim, arch.depth, arch.num_heads, arch.patch_size, arch.img_size) == (dim, depth, heads, patch, 224)
    assert arch.norm_eps == 1e-5 and arch.qkv_bias and not arch.layer_scale and arch.mlp_ratio == 4.0
    assert cfg.bands == HLS_BANDS == ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
    assert (cfg.model_cls is PrithviTL) == name.endswith("_tl")
    v2 = name.startswith("prithvi_eo_v2")
    assert cfg.checkpoint.strip_prefixes == (("encoder.",) if v2 else ("module.",))
    assert cfg.mean[3] == (2734.0 if v2 else pytest.approx(2497.2022620507532))


@pytest.mark.parametrize("name", SPEC)
def test_parameter_count_matches_spec(name):
    model = build_meta(name)
    dim, _, _, _, frames, encoder_params = SPEC[name]
    stored_positions = (1 + frames * model.cfg.arch.grid**2) * dim  # slimkern recomputes pos_embed
    assert sum(p.numel() for p in model.parameters()) + stored_positions == encoder_params


@pytest.mark.parametrize("name", SPEC)
def test_official_full_size_file_matches_the_model(name):
    model = build_meta(name)
    file = official_file(name, model.cfg.arch, lambda key, shape: torch.empty(shape, device="meta"))
    if name == "prithvi_eo_v2_300":  # MODELS.md appendix: a third-party audit of the real file
        assert sum(k.startswith("encoder.") for k in file) == 294 and sum(k.startswith("decoder.") for k in file) == 104
    state = model.convert_checkpoint(unwrap_state_dict(file, model.cfg.checkpoint))
    check_state_dict(state, {k: p.shape for k, p in model.named_parameters()}, name)  # raises on any mismatch


@pytest.mark.parametrize("name", ["prithvi_eo_v1_100", "prithvi_eo_v2_300_tl"])
def test_official_container_round_trip(tmp_path, name):
    source = tiny(name)
    state = source.state_dict()
    prefix = "encoder." if name.startswith("prithvi_eo_v2") else ""

    def make(key: str, shape: list[int]) -> torch.Tensor:
        return state[key.removeprefix(prefix)] if key.removeprefix(prefix) in state else torch.randn(shape)

    path = tmp_path / "Prithvi.pt"
    torch.save(official_file(name, source.cfg.arch, make, decoder_dim=32, decoder_depth=1), path)
    loaded = slimkern.load(name, weights=path, **TINY)
    for key, value in loaded.state_dict().items():  # the official layout comes back out, bit for bit
        assert torch.equal(value, state[key]), key
    assert loaded.state_dict().keys() == state.keys()
    x = images(source)
    for width in (1.0, 0.1):
        assert torch.equal(loaded.run(x, width, **coords(loaded)), source.run(x, width, **coords(source)))


# -- slimming: the engine against the reference path ------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", WIDTHS)
def test_engine_matches_reference(width, mode):
    model = tiny("prithvi_eo_v2_600_tl")  # the plain models' stem is a part of this one's
    x = images(model, batch=1)
    for output in ("pooled", "tokens"):
        fast = model.run(x, width, mode=mode, output=output, **coords(model, batch=1))
        ref = model.reference(x, width, mode=mode, output=output, **coords(model, batch=1))
        assert fast.dtype == torch.float32 and ref.dtype == torch.float64
        assert rel_error(fast, ref) < 1e-5, (width, mode, output)


def test_widths_really_change_the_output():
    model = tiny("prithvi_eo_v2_300")
    x = images(model)
    outs = [model.run(x, w) for w in (1.0, 0.5, 0.1)]
    assert rel_error(outs[1], outs[0]) > 1e-2 and rel_error(outs[2], outs[1]) > 1e-2


def test_output_shapes_and_token_count():
    model = tiny("prithvi_eo_v2_600_tl")  # patch 14: 16 x 16 patches at 224 px
    x = images(model)
    assert model.run(x, 0.1, **coords(model)).shape == (2, 128)
    assert model.run(x, 0.1, output="tokens", **coords(model)).shape == (2, 257, 128)
    assert model.num_tokens(224, 224) == 1 + 4 * 256 and model.num_tokens(98, 154) == 1 + 4 * 7 * 11  # 4 frames



@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_against_float64(dtype):
    model = tiny("prithvi_eo_v2_300_tl", dtype=dtype)
    report = model.validate(images(model, 1, size=(96, 160)).to(dtype), 0.1, **coords(model, batch=1))
    assert report.ok, report

# -- the independent implementation ---------------------------------------------------------------
def official_table(dim: int, positions: np.ndarray) -> np.ndarray:
    """TerraTorch ``get_1d_sincos_pos_embed_from_grid``: ``[sin(p w) | cos(p w)]``, ``w_i = 10000^(-2i/dim)``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
    angles = np.einsum("m,d->md", positions.astype(float).reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def official_positions(dim: int, frames: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """TerraTorch ``get_3d_sincos_pos_embed`` (no class row): the w part tiled over (t, h), the h part repeated
    over w and tiled over t, the t part repeated over h * w; concatenated [w | h | t] with 6/16, 6/16, 4/16."""
    six, four = dim // 16 * 6, dim // 16 * 4
    w = np.tile(official_table(six, np.arange(grid_w)), (frames * grid_h, 1))
    h = np.tile(np.repeat(official_table(six, np.arange(grid_h)), grid_w, axis=0), (frames, 1))
    t = np.repeat(official_table(four, np.arange(frames)), grid_h * grid_w, axis=0)
    return torch.from_numpy(np.concatenate([w, h, t], axis=1))


class OfficialPrithvi(nn.Module):
    """TerraTorch ``PrithviViT.forward_features`` (last output, final-normed) re-read, in float64."""

    def __init__(self, model: slimkern.SlimModel) -> None:
        super().__init__()
        arch = self.arch = model.cfg.arch
        d, p = arch.dim, arch.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(arch.in_chans, d, kernel_size=(1, p, p), stride=(1, p, p))
        self.blocks = nn.ModuleList(Block(d, arch.num_heads, arch.mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
                                    for _ in range(arch.depth))
        self.norm = nn.LayerNorm(d)
        self.tl = isinstance(model, PrithviTL)
        if self.tl:
            for name in ("temporal_embed_enc", "location_embed_enc"):
                setattr(self, name, nn.Module())
                getattr(self, name).scale = nn.Parameter(torch.full((1,), 0.1))
        self.load_state_dict(model.state_dict(), strict=True)
        self.double().eval()

    def embed(self, x: torch.Tensor, temporal_coords=None, location_coords=None) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)  # TerraTorch adds the time axis to a 4-D input
        frames, height, width = x.shape[-3:]
        d, p = self.arch.dim, self.arch.patch_size
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        native, grid = self.arch.grid, (height // p, width // p)
        pos = official_positions(d, frames, native, native)  # recomputed for the input's frame count
        if grid != (native, native):
            patch_pos = pos.reshape(frames, native, native, d).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=True)
            pos = patch_pos.permute(0, 2, 3, 1).reshape(-1, d)
        tokens = tokens + pos
        # TerraTorch skips each encoding whose input is absent; it computes the tables in the coordinates' float
        # dtype (float64 here)
        if self.tl and temporal_coords is not None:
            time = np.asarray(temporal_coords, dtype=float)
            year = official_table(d // 2, time[:, :, 0]).reshape(*time.shape[:2], -1)
            day = official_table(d - d // 2, time[:, :, 1]).reshape(*time.shape[:2], -1)
            per_frame = self.temporal_embed_enc.scale * torch.from_numpy(np.concatenate([year, day], axis=-1))
            tokens = tokens + torch.repeat_interleave(per_frame, tokens.shape[1] // frames, dim=1)
        if self.tl and location_coords is not None:
            place = np.asarray(location_coords, dtype=float)
            lat = official_table(d // 2, place[:, 0]).reshape(len(place), 1, -1)
            lon = official_table(d - d // 2, place[:, 1]).reshape(len(place), 1, -1)
            tokens = tokens + self.location_embed_enc.scale * torch.from_numpy(np.concatenate([lat, lon], axis=-1))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # + the all-zero class row of pos_embed
        return torch.cat([cls, tokens], dim=1)

    def forward(self, x: torch.Tensor, **inputs) -> torch.Tensor:
        x = self.embed(x.double(), **inputs)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@pytest.mark.parametrize("size", [None, (96, 160)])
@pytest.mark.parametrize("name", ["prithvi_eo_v1_100", "prithvi_eo_v2_300_tl", "prithvi_eo_v2_600"])
def test_full_width_equals_official_implementation(name, size):
    model = tiny(name)
    if size and name == "prithvi_eo_v2_600":
        size = (98, 154)  # multiples of 14
    x = images(model, size=size)
    with torch.no_grad():
        want = OfficialPrithvi(model)(x, **coords(model))
    got = model.run(x, 1.0, output="tokens", **coords(model))
    assert got.shape == want.shape
    assert rel_error(got, want) < 1e-5
    assert rel_error(model.reference(x, output="tokens", **coords(model)), want) < 1e-12
    # pooled: the mean of the final-normed patch tokens
    assert rel_error(model.run(x, 1.0, **coords(model)), want[:, 1:].mean(dim=1)) < 1e-5


def test_several_frames():
    model = tiny("prithvi_eo_v2_300_tl")
    official = OfficialPrithvi(model)
    x = torch.randn(2, 6, 3, 64, 48, dtype=torch.float64)
    time = [[[2020, 10], [2020, 100], [2021, 200]], [[2018, 1], [2018, 30], [2018, 365]]]
    with torch.no_grad():
        want = official.embed(x, temporal_coords=time, location_coords=PLACE)
    got = model.embed(x, temporal_coords=time, location_coords=PLACE)
    assert got.shape == (2, 1 + 3 * 4 * 3, 128) and rel_error(got, want) < 1e-12
    fast = model.run(x.float(), 0.1, output="tokens", temporal_coords=time, location_coords=PLACE)
    ref = model.reference(x.float(), 0.1, output="tokens", temporal_coords=time, location_coords=PLACE)
    assert fast.shape == (2, 1 + 3 * 4 * 3, 128) and rel_error(fast, ref) < 1e-5
    single = model.embed(x[:, :, 0], temporal_coords=[t[:1] for t in time], location_coords=PLACE)
    assert torch.equal(single, model.embed(x[:, :, :1], temporal_coords=[t[:1] for t in time],
                                           location_coords=PLACE))


def test_positions_are_column_row_frame_sin_cos():
    pos = sincos_3d(32, 2, 3, 4)
    assert pos.shape == (2 * 3 * 4, 32)
    t, r, c = 1, 2, 3
    token = (t * 3 + r) * 4 + c
    want = torch.cat([sincos_1d(12, torch.tensor([c]))[0], sincos_1d(12, torch.tensor([r]))[0],
                      sincos_1d(8, torch.tensor([t]))[0]])
    torch.testing.assert_close(pos[token], want)
    with pytest.raises(ValueError, match="divisible by 16"):
        sincos_3d(40, 1, 2, 2)
    with pytest.raises(ValueError, match="dim 40 is not divisible by 16"):
        tiny("prithvi_eo_v2_300", dim=40, num_heads=2)


def test_time_and_location_change_the_output_and_broadcast():
    model = tiny("prithvi_eo_v2_100_tl")
    x = images(model, batch=2)
    base = model.run(x, 0.5, temporal_coords=TIME, location_coords=PLACE)
    later = model.run(x, 0.5, temporal_coords=[[[2022, 163]], [[2019, 0]]], location_coords=PLACE)
    moved = model.run(x, 0.5, temporal_coords=TIME, location_coords=[[38.9, -77.0], [-3.1, 121.5]])
    assert rel_error(later[0], base[0]) > 1e-3 and torch.equal(later[1], base[1])
    assert rel_error(moved[1], base[1]) > 1e-3 and torch.equal(moved[0], base[0])
    one = model.run(x, 0.5, temporal_coords=torch.tensor([TIME[0]]),
                    location_coords=torch.tensor(PLACE[:1], dtype=torch.float64))
    assert torch.equal(one, model.run(x, 0.5, temporal_coords=[TIME[0]] * 2, location_coords=PLACE[:1] * 2))


# -- FLOPs ------------------------------------------------------------------------------------------
def counted_flops(model, x, width, mode) -> int:
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode, **coords(model, batch=1))
    return counter.get_total_flops()


@pytest.mark.parametrize("width, mode", [(1.0, "attn+ffn"), (0.1, "attn+ffn"), (0.001, "attn"), (0.333, "ffn")])
def test_flops_match_flop_counter(width, mode):
    model = tiny("prithvi_eo_v2_600_tl", num_frames=1)  # FLOPs are reported for num_frames; the input has 1
    assert model.flops(width, mode=mode) == pytest.approx(counted_flops(model, images(model, 1), width, mode), rel=0.01)
    x = images(model, 1, size=(98, 154))
    assert model.flops(width, mode=mode, image_size=(98, 154)) == pytest.approx(counted_flops(model, x, width, mode),
                                                                                rel=0.01)


def test_full_size_compute():
    # Prithvi-EO-2.0 300M on one frame is a ViT-L/16 whose stem reads 6 bands instead of SatMAE's 3
    one_frame = build_meta("prithvi_eo_v2_300", num_frames=1)
    assert one_frame.flops() == build_meta("satmae").flops() + 2 * 196 * 3 * 16 * 16 * 1024
    big = build_meta("prithvi_eo_v2_600")  # FLOPs default to the 4 pre-training frames: 1025 tokens
    assert big.num_tokens(224, 224) == 1 + 4 * 256
    rel = [big.relative_flops(w) for w in (1.0, 0.5, 0.1, 0.001)]
    # SLIMMING.md: the paper's smallest budget for the 600M is 0.78 %
    assert rel == sorted(rel, reverse=True) and rel[-1] == pytest.approx(0.0078, abs=0.0001)
    assert build_meta("prithvi_eo_v2_600", num_frames=1).relative_flops(0.001) == pytest.approx(0.0074, abs=0.0002)


# -- bad inputs -------------------------------------------------------------------------------------
def test_wrong_band_count_names_the_hls_bands():
    with pytest.raises(ValueError, match=r"x has 4 bands .* expected 6 in this order: BLUE, GREEN, RED, NIR_NARROW"):
        tiny("prithvi_eo_v2_300").run(torch.randn(1, 4, 224, 224))


def test_wrong_image_size():
    with pytest.raises(ValueError, match=r"image size 224x200 is not a positive multiple of the patch size 16"):
        tiny("prithvi_eo_v2_300").run(torch.randn(1, 6, 224, 200))
    with pytest.raises(ValueError, match=r"image size 224x231 is not a positive multiple of the patch size 14"):
        build_meta("prithvi_eo_v2_600").flops(image_size=(224, 231))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"must be \[B, C, H, W\] or \[B, C, T, H, W\], got shape \(6, 224, 224\)"):
        tiny("prithvi_eo_v2_300").run(torch.randn(6, 224, 224))


@pytest.mark.parametrize("given", [(), ("temporal_coords",), ("location_coords",)])
def test_tl_without_time_or_location_skips_that_encoding(given):
    # TerraTorch's PrithviViT adds each encoding only when its coordinates are given (inputs without metadata)
    model = tiny("prithvi_eo_v2_300_tl")
    x = images(model, 2)
    inputs = {k: v for k, v in coords(model).items() if k in given}
    with torch.no_grad():
        want = OfficialPrithvi(model)(x, **inputs)
    got = model.run(x, 1.0, output="tokens", **inputs)
    assert rel_error(got, want) < 1e-5
    full = model.run(x, 1.0, output="tokens", **coords(model))
    assert rel_error(got, full) > 1e-3  # the encodings that were given (or skipped) matter


def test_time_and_location_refused_by_plain_models():
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected location_coords, temporal_coords"):
        tiny("prithvi_eo_v2_300").run(torch.randn(1, 6, 224, 224), temporal_coords=TIME[:1],
                                      location_coords=PLACE[:1])


@pytest.mark.parametrize("time, place, error, match", [
    ([[2021, 163]], PLACE[:1], ValueError, r"temporal_coords must be \[B, T, 2\].*B = 1; got shape \(1, 2\)"),
    ([[[2021, 163], [2021, 180]]], PLACE[:1], ValueError, r"T = 1 for x of shape \(1, 6, 224, 224\)"),
    (TIME[:1], [38.9, -77.0], ValueError, r"location_coords must be \[B, 2\].*got shape \(2,\)"),
    ([[[21, 163]]], PLACE[:1], ValueError, r"calendar years in \[1900, 2100\] \(e.g. 2021\), got \[21.0\]"),
    ([[[2021, 400]]], PLACE[:1], ValueError, r"day of the year in \[0, 366\].*got \[400.0\]"),
    (TIME[:1], [[-120.0, 38.9]], ValueError, r"this looks like \(longitude, latitude\): pass \(latitude, longitude\)"),
    (TIME[:1], [[38.9, 200.0]], ValueError, r"longitudes in degrees in \[-180, 180\], got \[200.0\]"),
    ([[[2021, float("nan")]]], PLACE[:1], ValueError, "temporal_coords contains NaN or Inf"),
    ("2021-06-12", PLACE[:1], TypeError, "temporal_coords must be a tensor or nested list of numbers"),
])
def test_bad_time_or_location(time, place, error, match):
    model = tiny("prithvi_eo_v2_300_tl")
    with pytest.raises(error, match=match):
        model.run(images(model, 1), temporal_coords=time, location_coords=place)
