"""Prithvi-EO (NASA / IBM): MAE-pretrained ViTs on HLS time series with a 3-D (tubelet) patch embedding.

Facts from the official code (read, not copied):

- v1: ``NASA-IMPACT/hls-foundation-os`` ``hls-gfm/models_mae.py`` (``MaskedAutoencoderViT``) and
  ``geospatial_fm/geospatial_fm.py`` (``TemporalViTEncoder``). Its file is a flat state dict with the
  MAE decoder (``mask_token``, ``decoder_*``) beside the encoder and no prefix.
- v2: ``IBM/terratorch`` ``models/backbones/prithvi_mae.py`` (``PrithviViT``, ``TemporalEncoder``,
  ``LocationEncoder``, ``_interpolate_pos_encoding``) and ``prithvi_vit.py`` (``prithvi_cfgs``,
  ``checkpoint_filter_fn_vit``, ``_create_prithvi``). Its files are ``PrithviMAE`` state dicts: flat,
  ``encoder.`` / ``decoder.`` prefixes.
- Stem: ``Conv3d(C, D, kernel=stride=(1, p, p))`` over ``[B, C, T, H, W]``; every release uses 1-frame
  tubelets, so each frame is patchified on its own. Tokens are frame-major, then row-major.
- Positions: fixed 3-D sin-cos, dims split ``[w: 6D/16 | h: 6D/16 | t: 4D/16]``, each part MAE's 1-D
  ``[sin | cos]``; the class row is zero. The files store it (``pos_embed``, for 3 or 4 frames), but
  TerraTorch replaces it with the model's own (``checkpoint_filter_fn_vit``), recomputes it for another
  frame count and resamples it bicubically (``align_corners=True``) for another image size. slimkern
  does the same and drops the stored copy.
- TL variants: ``scale_t * [sincos_{D/2}(year) | sincos_{D/2}(day of year)]`` per frame and
  ``scale_l * [sincos_{D/2}(lat) | sincos_{D/2}(lon)]`` added to the patch tokens (not the class
  token) after the positions; ``scale_*`` are learned scalars (``coords_scale_learn=True``).
- Blocks: timm ``Block`` with ``qkv_bias=True`` and ``norm_layer=nn.LayerNorm`` (eps 1e-5, never
  overridden), then the final norm.
- Frames: :meth:`~slimkern.SlimModel.run` takes a time series ``[B, C, T, H, W]`` or one frame
  ``[B, C, H, W]`` (TerraTorch's backbone default, ``num_frames=1``). ``arch.num_frames`` is the frame
  count FLOPs are reported for by default: the pre-training count (v1: 3, v2: 4), which the paper's
  budgets use (Prithvi-EO-2.0 600M at s = 0.001: 0.78 % with 4 frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bands import HLS_BANDS, HLS_OLI
from ..flops import patch_embed_flops
from ..model import SlimModel
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .pos_embed import sincos_1d
from .stem import patch_embed
from .vit import ViTArch

# Accepted ranges of the TL inputs: any plausible scene date; they catch two-digit years, days written as
# MMDD (e.g. 1231) and, with the latitude/longitude ranges, most swapped (lon, lat) pairs and 0-360 longitudes.
YEARS = (1900.0, 2100.0)
DAYS = (0.0, 366.0)  # TerraTorch's datasets pass 0- or 1-based days of the year


@dataclass(frozen=True)
class PrithviArch(ViTArch):
    """Prithvi encoder shape. ``patch_size`` is spatial: every release uses 1-frame tubelets."""

    in_chans: int = 6
    norm_eps: float = 1e-5
    num_frames: int = 4  # frames of the default input (FLOP counts); run() takes any T

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim % 16:
            raise ValueError(f"Prithvi's 3-D sin-cos positions split dim into sixteenths (6/6/4); "
                             f"dim {self.dim} is not divisible by 16")


def sincos_3d(dim: int, frames: int, grid_h: int, grid_w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[frames * grid_h * grid_w, dim]`` float64 positions, frame-major then row-major.

    Columns are ``[w | h | t]`` with ``6 dim/16``, ``6 dim/16`` and ``4 dim/16`` dims, each a 1-D sin-cos
    of the column, row and frame index (TerraTorch ``get_3d_sincos_pos_embed``).
    """
    if dim % 16:
        raise ValueError(f"3-D sin-cos positions need a dim divisible by 16, got {dim}")
    sixteenth = dim // 16
    # the 1-D tables are tiny: build them on the CPU, broadcast on the device
    w = sincos_1d(6 * sixteenth, torch.arange(grid_w)).to(device)
    h = sincos_1d(6 * sixteenth, torch.arange(grid_h)).to(device)
    t = sincos_1d(4 * sixteenth, torch.arange(frames)).to(device)
    shape = (frames, grid_h, grid_w, -1)
    parts = (w[None, None, :].expand(shape), h[None, :, None].expand(shape), t[:, None, None].expand(shape))
    return torch.cat(parts, dim=-1).reshape(-1, dim)


class Prithvi(SlimModel):
    """Prithvi-EO encoder: 3-D patch embedding, class token, 3-D sin-cos positions, pre-norm blocks.

    ``run(x)`` takes HLS frames ``x`` ``[B, 6, T, H, W]`` or one frame ``[B, 6, H, W]`` (normalised, bands
    in ``cfg.bands`` order).
    """

    input_ranks = (4, 5)

    def __init__(self, cfg: ModelCfg) -> None:
        arch: PrithviArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        if arch.in_chans != len(cfg.bands):
            raise ValueError(f"{cfg.name}: in_chans={arch.in_chans} but the cfg lists {len(cfg.bands)} bands")
        meta = {"device": "meta"}
        p = arch.patch_size
        self.cls_token = nn.Parameter(torch.empty(1, 1, arch.dim, **meta), requires_grad=False)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Module()
        self.patch_embed.proj.weight = nn.Parameter(torch.empty(arch.dim, arch.in_chans, 1, p, p, **meta),
                                                    requires_grad=False)
        self.patch_embed.proj.bias = nn.Parameter(torch.empty(arch.dim, **meta), requires_grad=False)

    def num_tokens(self, height: int, width: int) -> int:
        p = self.cfg.arch.patch_size
        return self.num_prefix_tokens + self.cfg.arch.num_frames * (height // p) * (width // p)

    def input_tokens(self, shape) -> int:
        frames = shape[2] if len(shape) == 5 else 1  # [B, C, T, H, W] or one frame [B, C, H, W]
        p = self.cfg.arch.patch_size
        return self.num_prefix_tokens + frames * (shape[-2] // p) * (shape[-1] // p)

    def stem_flops(self, height: int, width: int) -> int:
        arch = self.cfg.arch
        patches = self.num_tokens(height, width) - self.num_prefix_tokens
        return patch_embed_flops(patches, arch.in_chans, arch.patch_size, arch.dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self._patch_tokens(x)
        return self._with_class_token(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        # TerraTorch's classification path drops the class token (ReshapeTokensToImage /
        # prepare_features_for_image_model) and its ClassificationHead averages the token grid
        return tokens[:, self.num_prefix_tokens:].mean(dim=1)

    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # the stored pos_embed is the fixed sin-cos table for the pre-training frame count; like
        # TerraTorch, slimkern recomputes the positions for every input instead
        return {key: value for key, value in state.items() if key != "pos_embed"}

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        proj = self.patch_embed.proj
        fan_in = proj.weight[0].numel()
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) * fan_in**-0.5)
        proj.bias.copy_(0.02 * torch.randn(proj.bias.shape, generator=generator))
        self.cls_token.copy_(0.02 * torch.randn(self.cls_token.shape, generator=generator))

    # -- the stem, shared with the TL variants ----------------------------------------------------
    def positions(self, frames: int, grid_h: int, grid_w: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Float64 positions ``[frames * grid_h * grid_w, D]`` of the patch tokens (the class row is zero).

        Computed for ``frames`` on the native grid, then resampled bicubically (``align_corners=True``)
        to ``grid_h x grid_w`` when that differs, as TerraTorch's ``_interpolate_pos_encoding`` does.
        """
        native = self.cfg.arch.grid
        pos = sincos_3d(self.dim, frames, native, native, device)
        if (grid_h, grid_w) != (native, native):
            grid = pos.reshape(frames, native, native, self.dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=True)
            pos = grid.permute(0, 2, 3, 1).reshape(-1, self.dim)
        return pos

    def _patch_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Patch tokens plus positions ``[B, T * h * w, D]`` of ``x`` ``[B, C, H, W]`` (T = 1) or
        ``[B, C, T, H, W]``, and ``T``."""
        dtype, p = x.dtype, self.cfg.arch.patch_size
        frames = x.shape[2] if x.dim() == 5 else 1
        if x.dim() == 5:
            x = x.transpose(1, 2).flatten(0, 1)  # [B * T, C, H, W]
        proj = self.patch_embed.proj
        # a Conv3d with kernel = stride = (1, p, p) is the same patch embedding of every frame
        tokens, (grid_h, grid_w) = patch_embed(x, proj.weight[:, :, 0], proj.bias, p)
        tokens = tokens.reshape(-1, frames * grid_h * grid_w, self.dim)
        return tokens + self.positions(frames, grid_h, grid_w, x.device).to(dtype), frames

    def _with_class_token(self, tokens: torch.Tensor) -> torch.Tensor:
        # the sin-cos class row is zero, so the class token enters as stored
        cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)


class PrithviTL(Prithvi):
    """Prithvi-EO-2.0 TL: adds learned-scale sin-cos encodings of acquisition time and location.

    ``run(x, temporal_coords=..., location_coords=...)``; each is optional and, when absent, its encoding is skipped,
    as TerraTorch's ``PrithviViT`` does (``if self.temporal_encoding and temporal_coords is not None``):

    - ``temporal_coords`` ``[B, T, 2]``: (year, day of year) of each frame; ``T`` = 1 for ``[B, C, H, W]``.
    - ``location_coords`` ``[B, 2]``: (latitude, longitude) in degrees, the encoder's own order
      (``LocationEncoder``) and TerraTorch's datasets'. (The Prithvi inference scripts fill it from
      rasterio's ``lnglat()``, i.e. (lon, lat); slimkern follows the encoder.)

    A leading size of 1 is broadcast over the batch, as in TerraTorch.
    """

    extra_inputs = ("temporal_coords", "location_coords")

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__(cfg)
        for name in ("temporal_embed_enc", "location_embed_enc"):
            encoder = nn.Module()
            encoder.scale = nn.Parameter(torch.empty(1, device="meta"), requires_grad=False)
            setattr(self, name, encoder)

    def embed(self, x: torch.Tensor, temporal_coords: torch.Tensor | Sequence | None = None,
              location_coords: torch.Tensor | Sequence | None = None) -> torch.Tensor:
        tokens, frames = self._patch_tokens(x)
        batch, dtype, device = tokens.shape[0], tokens.dtype, tokens.device
        time = None if temporal_coords is None else self._coords(
            "temporal_coords", temporal_coords, (frames, 2), batch,
            f"[B, T, 2] = (year, day of year) per frame, T = {frames} for x of shape {tuple(x.shape)}")
        where = None if location_coords is None else self._coords(
            "location_coords", location_coords, (2,), batch, "[B, 2] = (latitude, longitude) in degrees")
        if not torch.compiler.is_compiling():  # a traced graph cannot branch on the values
            self._check_ranges(time, where)
        half = self.dim // 2
        if time is not None:
            per_frame = torch.cat([sincos_1d(half, time[..., 0]), sincos_1d(self.dim - half, time[..., 1])], dim=1)
            time_enc = self.temporal_embed_enc.scale.double() * per_frame.to(device).reshape(-1, frames, 1, self.dim)
            tokens = (tokens.reshape(batch, frames, -1, self.dim) + time_enc.to(dtype)).reshape(batch, -1, self.dim)
        if where is not None:
            per_image = torch.cat([sincos_1d(half, where[:, 0]), sincos_1d(self.dim - half, where[:, 1])], dim=1)
            tokens = tokens + (self.location_embed_enc.scale.double()
                               * per_image.to(device).reshape(-1, 1, self.dim)).to(dtype)
        return self._with_class_token(tokens)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        super().init_stem_random(generator)
        # official init is 0.1; larger values make the encodings visible in tests
        for encoder in (self.temporal_embed_enc, self.location_embed_enc):
            encoder.scale.copy_(0.5 + 0.1 * torch.randn(1, generator=generator))

    def _coords(self, name: str, value: torch.Tensor | Sequence | None, shape: tuple[int, ...], batch: int,
                expected: str) -> torch.Tensor:
        """``value`` as a float64 CPU tensor ``[B or 1, *shape]``, or a clear error."""
        try:
            # lists straight to float64: through torch's default float32, 38.9 would become 38.900001525...
            coords = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
            coords = coords.detach().to("cpu", torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{self.cfg.name}: {name} must be a tensor or nested list of numbers, {expected}; "
                            f"got {type(value).__name__} ({err})") from None
        if coords.dim() != 1 + len(shape) or tuple(coords.shape[1:]) != shape or coords.shape[0] not in (1, batch):
            batches = f"B = {batch} or 1" if batch > 1 else "B = 1"
            raise ValueError(f"{self.cfg.name}: {name} must be {expected}, with {batches}; "
                             f"got shape {tuple(coords.shape)}")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(coords).all()):
            raise ValueError(f"{self.cfg.name}: {name} contains NaN or Inf values")
        return coords

    def _check_ranges(self, time: torch.Tensor | None, where: torch.Tensor | None) -> None:
        def outside(values: torch.Tensor, low: float, high: float) -> list[float]:
            return values[(values < low) | (values > high)].tolist()

        name = self.cfg.name
        if time is not None and (bad := outside(time[..., 0], *YEARS)):
            raise ValueError(f"{name}: temporal_coords[..., 0] must be calendar years in [{YEARS[0]:g}, "
                             f"{YEARS[1]:g}] (e.g. 2021), got {bad[:4]}")
        if time is not None and (bad := outside(time[..., 1], *DAYS)):
            raise ValueError(f"{name}: temporal_coords[..., 1] must be the day of the year in [{DAYS[0]:g}, "
                             f"{DAYS[1]:g}] (not a month or a date), got {bad[:4]}")
        if where is None:
            return
        lat, lon = where[:, 0], where[:, 1]
        if bad := outside(lat, -90.0, 90.0):
            swapped = not outside(lon, -90.0, 90.0) and not outside(lat, -180.0, 180.0)
            hint = "; this looks like (longitude, latitude): pass (latitude, longitude)" if swapped else ""
            raise ValueError(f"{name}: location_coords[:, 0] must be latitudes in degrees in [-90, 90], "
                             f"got {bad[:4]}{hint}")
        if bad := outside(lon, -180.0, 180.0):
            raise ValueError(f"{name}: location_coords[:, 1] must be longitudes in degrees in [-180, 180], "
                             f"got {bad[:4]}")


# -- registration ---------------------------------------------------------------------------------
_V1_CHECKPOINT = CheckpointFormat(
    strip_prefixes=("module.",),
    drop_prefixes=("mask_token", "decoder_"),  # the MAE decoder beside the encoder
)
_V2_CHECKPOINT = CheckpointFormat(
    strip_prefixes=("encoder.",),  # PrithviMAE: encoder. / decoder. sub-modules
    drop_prefixes=("decoder.",),
)
_HLS_SENSOR = "HLS surface reflectance (Landsat-8/9 OLI and Sentinel-2 MSI, harmonised)"
_V1_CONFIG = Source("config", "https://huggingface.co/ibm-nasa-geospatial/Prithvi-EO-1.0-100M config.json "
                              "(bands, mean, std, num_frames 3, img_size 224, patch 16)")
_V2_CODE = Source("code", "IBM/terratorch@85467a9f terratorch/models/backbones/prithvi_vit.py (prithvi_cfgs, "
                          "PRITHVI_V2_MEAN/STD = the HF config.json of every v2 release)")
_HLS_GSD = Source("docs", "HLS v2.0 User Guide (https://lpdaac.usgs.gov/documents/1698/HLS_User_Guide_V2.pdf): 30 m")


def _spec(stats: tuple, patch_size: int, frames: int, data: str, config: Source, paper: Source) -> InputSpec:
    return InputSpec(
        sensor=_HLS_SENSOR, bands=HLS_BANDS, wavelengths=HLS_OLI, unit="DN", quantification=10000.0, scale=1.0,
        offset=0.0, normalization="standardize", mean=stats[0], std=stats[1], image_size=224, patch_size=patch_size,
        gsd_m=30.0, frames=frames, pretraining_data=data,
        sources=cite(sensor=paper, bands=config, units=config, normalization=config, image_size=config,
                     patch_size=config, gsd_m=_HLS_GSD, frames=config, pretraining_data=paper),
    )


_POOLED = ("mean of the patch tokens after the final norm, class token excluded (TerraTorch's classification "
           "path: the neck drops the class token, ClassificationHead averages the token grid)")
_LICENSE = "Apache-2.0"
_V1_PAPER = ("Jakubik et al., Foundation Models for Generalist Geospatial Artificial Intelligence, arXiv:2310.18660, "
             "2023")
_V2_PAPER = ("Szwarcman et al., Prithvi-EO-2.0: A Versatile Multi-Temporal Foundation Model for Earth Observation "
             "Applications, arXiv:2412.02732, 2024")
_HF = "https://huggingface.co/ibm-nasa-geospatial"

register_model(ModelCfg(
    name="prithvi_eo_v1_100",
    aliases=("prithvi_eo_v1_100m",),
    family="prithvi",
    model_cls=Prithvi,
    arch=PrithviArch(dim=768, depth=12, num_heads=12, num_frames=3),
    description="Prithvi-EO-1.0 100M: ViT-B/16 with 3-D patch embedding, MAE-pretrained on 3-frame HLS time "
                "series over the US",
    # full precision from the HF config (TerraTorch's PRITHVI_V1_MEAN/STD are these rounded)
    spec=_spec(((775.2290211032589, 1080.992780391705, 1228.5855250417867, 2497.2022620507532, 2204.2139147975554,
                 1610.8324823273745),
                (1281.526139861424, 1270.0297974547493, 1399.4802505642526, 1368.3446143747644, 1291.6764008585435,
                 1154.505683480695)),
               16, 3, "HLS time series over the contiguous US (3 frames)", _V1_CONFIG,
               Source("paper", "Jakubik et al., arXiv:2310.18660")),
    pooled=_POOLED,
    checkpoint=_V1_CHECKPOINT,
    weights_url=f"{_HF}/Prithvi-EO-1.0-100M/resolve/main/Prithvi_EO_V1_100M.pt",
    license=_LICENSE,
    paper=_V1_PAPER,
))

# TerraTorch PRITHVI_V2_MEAN / PRITHVI_V2_STD (= the HF config.json of every v2 release)
_V2_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
_V2_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


def _register_v2(size: str, vit: str, arch: PrithviArch, tl: bool) -> None:
    """One v2 release; ``size`` as in its name ("300M"), names and files follow the release's pattern."""
    tl_name, tl_repo, tl_file = ("_tl", "-TL", "_TL") if tl else ("", "", "")
    number = size.removesuffix("M")
    register_model(ModelCfg(
        name=f"prithvi_eo_v2_{number}{tl_name}",  # TerraTorch's backbone names
        aliases=(f"prithvi_eo_v2_{number}m{tl_name}",),  # the names in tests/data/model_specs.json
        family="prithvi",
        model_cls=PrithviTL if tl else Prithvi,
        arch=arch,
        description=f"Prithvi-EO-2.0 {size}{tl_repo}: {vit} with 3-D patch embedding"
                    f"{' and time/location encodings' if tl else ''}, MAE-pretrained on 4-frame global HLS "
                    "time series",
        spec=_spec((_V2_MEAN, _V2_STD), arch.patch_size, 4, "global HLS time series (4 frames)", _V2_CODE,
                   Source("paper", "Szwarcman et al., arXiv:2412.02732")),
        pooled=_POOLED,
        checkpoint=_V2_CHECKPOINT,
        weights_url=f"{_HF}/Prithvi-EO-2.0-{size}{tl_repo}/resolve/main/Prithvi_EO_V2_{size}{tl_file}.pt",
        license=_LICENSE,
        paper=_V2_PAPER,
    ))


_V2_100 = PrithviArch(dim=768, depth=12, num_heads=12)
_V2_300 = PrithviArch(dim=1024, depth=24, num_heads=16)
_V2_600 = PrithviArch(dim=1280, depth=32, num_heads=16, patch_size=14)
_register_v2("100M", "ViT-B/16", _V2_100, tl=True)  # no 100M release without TL
_register_v2("300M", "ViT-L/16", _V2_300, tl=False)
_register_v2("300M", "ViT-L/16", _V2_300, tl=True)
_register_v2("600M", "ViT-H/14", _V2_600, tl=False)
_register_v2("600M", "ViT-H/14", _V2_600, tl=True)
