"""Panopticon (Waldmann et al., 2025): a DINOv2 ViT-B/14 whose patch embedding takes any set of optical and
SAR bands, fusing them per patch with a cross-attention over channels.

Facts read in the official code (``Panopticon-FM/panopticon``: ``dinov2/models/panopticon.py`` as copied
in a third-party tree, ``dinov2/configs/stage2.yaml``, README) and in torchgeo 0.8.1
(``torchgeo/models/panopticon.py``):

- Stem (``PanopticonPE``, never slimmed): each band alone goes through the same ``1 x 14 x 14`` Conv3d to
  ``attn_dim = 2304``; a channel embedding is added per band; per patch, one learned query attends over
  the bands (``CrossAttnNoQueryProj``: 16 heads, bias-free key and value projections, no query or
  output projection, scale ``head_dim ** -0.5``); ``proj`` maps 2304 -> 768.
- Channel embedding (``ChnEmb``): an optical band with centre wavelength ``mu`` nm gets the 1-D sin-cos
  of ``floor(mu)`` (``[sin | cos]`` halves, ``omega_i = 10000^(-i/1152)``, computed in float32); a SAR
  band has a negative id ``-(k + 1)``, ``k = 4 * orbit + polarisation`` (VV, VH, HH, HV; orbit: unknown,
  ascending, descending), embedded as ``[transmit | receive | orbit]`` from three learned ``[2, 768]``
  tables (unknown orbit: the mean of both).
- Backbone: DINOv2 ViT-B/14 blocks (LayerScale), class token after the final norm as the embedding.
  The position table covers 518 px (``pos_emb_img_size: 518``) and is interpolated at run time
  (``interpolate_offset: 0.1``, ``interpolate_antialias: false``); pre-training used 224 px inputs.
- The released teacher file is flat (timm names, plus the training-only ``mask_token``).
- torchgeo differs in one place: it resizes the 518 px table to 224 px once at load time by output size
  with antialias, which gives slightly different position embeddings from the official run-time rule.
- Inputs: "standard normal normalization" per band (README), i.e. with the dataset's own statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bands import ESA_S2, S2_L2A_BANDS, SAR_BANDS
from ..flops import patch_embed_flops
from ..input_check import wavelength_values
from ..model import SlimModel
from ..registry import ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .dinov2 import DINOV2_CHECKPOINT, DinoV2Arch, interpolate_pos_embed, pos_resize_choice
from .dofa import KernelCache
from .stem import patch_embed

#: SAR polarisations in Panopticon's id order (transmit, receive).
SAR_POLARISATIONS = ("VV", "VH", "HH", "HV")
#: Orbit suffixes of SAR band names; no suffix means the orbit is unknown.
SAR_ORBITS = ("", "_asc", "_desc")


@dataclass(frozen=True)
class PanopticonArch(DinoV2Arch):
    """Panopticon's architecture. ``in_chans`` is only the band count that :meth:`SlimModel.flops` assumes
    (the stem's cost grows with the number of bands); ``run`` takes any number of bands."""

    in_chans: int = 12
    pos_embed_size: int = 518
    attn_dim: int = 2304
    channel_heads: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attn_dim % self.channel_heads or self.attn_dim % 2 or self.attn_dim < 3:
            raise ValueError(f"attn_dim {self.attn_dim} must be even and divisible by channel_heads "
                             f"{self.channel_heads}")


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device="meta"), requires_grad=False)


def _holder(**params: nn.Parameter) -> nn.Module:
    module = nn.Module()
    for name, value in params.items():
        setattr(module, name, value)
    return module


def optical_embedding(nanometres: torch.Tensor, dim: int) -> torch.Tensor:
    """``ChnEmb``'s sin-cos of integer wavelengths in nm: ``[M, dim]``, computed in float32 as the official code
    does (the trained weights have only seen these values; float32 rounding moves phases by up to ~1e-4)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0))
    angles = nanometres.to(torch.float32)[:, None] * omega
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class Panopticon(SlimModel):
    """Panopticon ViT-B/14 with timm/torchgeo key names.

    ``run(x, width, wavelengths=[...])``: one entry per band of ``x``, in order: the centre wavelength in
    micrometres for an optical band (e.g. 0.665), or a SAR band name: ``"VV"``, ``"VH"``, ``"HH"``, ``"HV"``,
    optionally with the orbit, ``"VV_asc"``, ``"VH_desc"``. Micrometres become Panopticon's channel ids as
    ``floor(1000 * um)`` nm (rounded to 1e-6 nm first, so 1.005 um is 1005 nm despite binary floats).
    """

    extra_inputs = ("wavelengths",)
    any_band_count = True

    def __init__(self, cfg: ModelCfg) -> None:
        arch: PanopticonArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        a, p = arch.attn_dim, arch.patch_size
        third = a // 3
        self.cls_token = _param(1, 1, arch.dim)
        self.pos_embed = _param(1, 1 + arch.pos_grid**2, arch.dim)
        chnemb = _holder(embed_transmit=_param(2, third), embed_receive=_param(2, third),
                         embed_orbit=_param(2, a - 2 * third))
        xattn = nn.Module()
        xattn.inproj_k = _holder(weight=_param(a, a))
        xattn.inproj_v = _holder(weight=_param(a, a))
        chnfus = _holder(query=_param(1, 1, a))
        chnfus.chnemb, chnfus.xattn = chnemb, xattn
        conv3d = nn.Module()
        conv3d.conv3d = _holder(weight=_param(a, 1, 1, p, p), bias=_param(a))
        self.patch_embed = nn.Module()
        self.patch_embed.conv3d, self.patch_embed.chnfus = conv3d, chnfus
        self.patch_embed.proj = _holder(weight=_param(arch.dim, a), bias=_param(arch.dim))
        # channel embeddings per band set: a Python loop per band, and float32 sin-cos that other runtimes
        # (onnxruntime) compute ~1e-5 apart at these angles, so an export bakes them as constants
        self.kernel_cache = KernelCache()

    # -- inputs ------------------------------------------------------------------------------------
    def channel_ids(self, wavelengths, bands: int) -> tuple[float, ...]:
        """Panopticon's channel ids for ``wavelengths`` (see the class docstring): nm for optical bands,
        ``-1 .. -12`` for SAR bands."""
        name = self.cfg.name
        if wavelengths is None:
            raise TypeError(f"{name}: run() needs wavelengths=[...], one per band of x ({bands} bands): centre "
                            f"wavelengths in micrometres or SAR names {', '.join(SAR_POLARISATIONS)}")
        if isinstance(wavelengths, torch.Tensor):
            if wavelengths.dim() != 1:
                raise ValueError(f"{name}: wavelengths must be 1-D (one per band), got shape "
                                 f"{tuple(wavelengths.shape)}")
            wavelengths = wavelengths.detach().cpu().double().tolist()
        if isinstance(wavelengths, (str, bytes)) or not isinstance(wavelengths, Sequence):
            raise TypeError(f"{name}: wavelengths must be a list (one entry per band), got "
                            f"{type(wavelengths).__name__}")
        if len(wavelengths) != bands:
            raise ValueError(f"{name}: got {len(wavelengths)} wavelengths for {bands} bands; pass one per band of x")
        sar = {pol + orbit: -(4 * k + j + 1) for k, orbit in enumerate(SAR_ORBITS)
               for j, pol in enumerate(SAR_POLARISATIONS)}
        ids = []
        for value in wavelengths:
            if isinstance(value, str):
                if value not in sar:
                    raise ValueError(f"{name}: unknown SAR band {value!r}; expected one of {', '.join(sar)}")
                ids.append(float(sar[value]))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ids.append(self._optical_id(float(value), wavelengths))
            else:
                raise TypeError(f"{name}: each wavelength must be a number (micrometres) or a SAR band name, got "
                                f"{value!r}")
        return tuple(ids)

    def spectral_inputs(self, bands) -> dict[str, tuple]:
        """``wavelengths`` of canonical ``bands``: micrometres from the spec's table, SAR bands by name."""
        table = self.spec.wavelengths
        missing = [b for b in bands if b not in SAR_BANDS and table.wavelength(b) is None]
        if missing:
            raise ValueError(f"{self.cfg.name}: the {table.name!r} wavelength table has no {', '.join(missing)}; "
                             f"it lists {', '.join(table.bands)} and SAR bands {', '.join(SAR_BANDS)}")
        return {"wavelengths": tuple(b if b in SAR_BANDS else table.wavelength(b) for b in bands)}

    def input_wavelengths_um(self, inputs: dict) -> tuple[float, ...]:
        return wavelength_values(inputs.get("wavelengths"))

    def _optical_id(self, micrometres: float, wavelengths) -> float:
        name = self.cfg.name
        if not math.isfinite(micrometres) or micrometres <= 0:
            raise ValueError(f"{name}: optical wavelengths must be positive micrometres, got {list(wavelengths)}")
        if micrometres > 100:
            raise ValueError(f"{name}: wavelengths {list(wavelengths)} look like nanometres; Panopticon takes "
                             f"micrometres here (e.g. 0.665 for Sentinel-2 B04)")
        return float(math.floor(round(micrometres * 1000, 6)))

    def channel_embedding(self, ids: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
        """``ChnEmb``: ``[C, attn_dim]`` for channel ids (nm >= 0 optical, negative SAR)."""
        chnemb, a = self.patch_embed.chnfus.chnemb, self.cfg.arch.attn_dim
        rows = []
        for cid in ids:
            if cid >= 0:
                rows.append(optical_embedding(torch.tensor([cid]), a)[0].to(dtype))
                continue
            orbit, pol = divmod(int(-cid) - 1, 4)
            transmit = chnemb.embed_transmit[0 if pol < 2 else 1].to(dtype)
            receive = chnemb.embed_receive[0 if pol in (0, 3) else 1].to(dtype)
            orbits = chnemb.embed_orbit.to(dtype)
            orbit_emb = orbits.mean(dim=0) if orbit == 0 else orbits[orbit - 1]
            rows.append(torch.cat([transmit, receive, orbit_emb]))
        return torch.stack(rows)

    # -- family hooks ------------------------------------------------------------------------------
    def stem_flops(self, height: int, width: int) -> int:
        """Per-band convolution, key and value projections, query-key scores and weighted sum over the bands,
        and the output projection, for ``arch.in_chans`` bands."""
        arch = self.cfg.arch
        patches, bands, a = self.num_tokens(height, width) - 1, arch.in_chans, arch.attn_dim
        conv = bands * patch_embed_flops(patches, 1, arch.patch_size, a)
        key_value = 2 * 2 * patches * bands * a * a
        attention = 2 * 2 * patches * bands * a
        return conv + key_value + attention + 2 * patches * a * arch.dim

    def embed(self, x: torch.Tensor, wavelengths=None) -> torch.Tensor:
        arch, dtype = self.cfg.arch, x.dtype
        batch, bands, height, width = x.shape
        ids = self.channel_ids(wavelengths, bands)
        (chn_embed,) = self.kernel_cache.get((ids, dtype), self.patch_embed.chnfus.chnemb.parameters(),
                                             lambda: (self.channel_embedding(ids, dtype),))
        pe = self.patch_embed
        a, p, heads = arch.attn_dim, arch.patch_size, arch.channel_heads
        conv = pe.conv3d.conv3d
        # the 1 x p x p Conv3d over [B, 1, C, H, W] is the same one-band patch embedding of every band
        patches, grid = patch_embed(x.reshape(batch * bands, 1, height, width), conv.weight, conv.bias, p)
        patches = patches.reshape(batch, bands, -1, a) + chn_embed[None, :, None, :]  # [B, C, L, A]
        kv_in = patches.transpose(1, 2).reshape(-1, bands, a)  # [B*L, C, A]: attention over the bands
        xattn = pe.chnfus.xattn

        def split(y: torch.Tensor) -> torch.Tensor:  # [B*L, C, A] -> [B*L, heads, C, A / heads]
            return y.reshape(y.shape[0], bands, heads, a // heads).transpose(1, 2)

        k = split(F.linear(kv_in, xattn.inproj_k.weight.to(dtype)))
        v = split(F.linear(kv_in, xattn.inproj_v.weight.to(dtype)))
        q = pe.chnfus.query.to(dtype).reshape(1, heads, 1, a // heads) * (a // heads) ** -0.5
        probs = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B*L, heads, 1, C]
        fused = (probs @ v).reshape(batch, -1, a)  # [B, L, A]
        tokens = F.linear(fused, pe.proj.weight.to(dtype), pe.proj.bias.to(dtype))
        pos = interpolate_pos_embed(self.pos_embed, grid, arch.interpolate_offset, arch.interpolate_antialias)
        cls = self.cls_token.to(dtype).expand(batch, -1, -1)
        return torch.cat([cls, tokens], dim=1) + pos.to(dtype)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        def normal(param: torch.Tensor, std: float, mean: float = 0.0) -> None:
            param.copy_(mean + std * torch.randn(param.shape, generator=generator))

        pe, a, p = self.patch_embed, self.cfg.arch.attn_dim, self.cfg.arch.patch_size
        normal(pe.conv3d.conv3d.weight, 1 / p)
        normal(pe.conv3d.conv3d.bias, 0.02)
        normal(pe.chnfus.query, 1.0)
        for table in (pe.chnfus.chnemb.embed_transmit, pe.chnfus.chnemb.embed_receive, pe.chnfus.chnemb.embed_orbit):
            normal(table, 0.5)
        normal(pe.chnfus.xattn.inproj_k.weight, a**-0.5)
        normal(pe.chnfus.xattn.inproj_v.weight, a**-0.5)
        normal(pe.proj.weight, a**-0.5)
        normal(pe.proj.bias, 0.02)
        normal(self.cls_token, 0.02)
        normal(self.pos_embed, 0.1)


_PAPER = Source("paper", "Waldmann et al., Panopticon (arXiv:2503.10845): optical, multispectral, hyperspectral "
                        "and SAR sensors at their own GSDs")
_README = Source("readme", "https://github.com/Panopticon-FM/panopticon README (any channels with their wavelengths; "
                           "standard normal normalization per band)")
_CONFIG = Source("config", "Panopticon-FM/panopticon dinov2/configs/stage2.yaml (224 px crops, patch 14, "
                           "pos_emb_img_size 518)")
_SPEC = InputSpec(
    sensor="any optical or SAR sensor, via wavelengths (Sentinel-2 L2A bands are the band set FLOPs count)",
    bands=S2_L2A_BANDS, wavelengths=ESA_S2, unit="any", quantification=1.0, scale=1.0, offset=0.0,
    normalization="dataset", mean=None, std=None, image_size=224, patch_size=14, gsd_m=None, frames=1,
    pretraining_data="Panopticon's multi-sensor pretraining mix", any_bands=True, sar_by_name=True,
    sources=cite(sensor=_README, bands=_README, units=_README, normalization=_README, image_size=_CONFIG,
                 patch_size=_CONFIG, gsd_m=_PAPER, frames=_PAPER, pretraining_data=_PAPER),
    choices=(pos_resize_choice(Source("code", "Panopticon-FM/panopticon dinov2/models/panopticon.py "
                                              "(interpolate_offset 0.1, interpolate_antialias false)"),
                               "torchgeo", Source("code", "torchgeo 0.8.1 torchgeo/models/panopticon.py (the 518 px "
                                                          "table resized to 224 px at load, antialiased)")),),
)

register_model(ModelCfg(
    name="panopticon_vitb14",
    family="panopticon",
    model_cls=Panopticon,
    arch=PanopticonArch(img_size=224, pos_embed_size=518, patch_size=14, dim=768, depth=12, num_heads=12,
                        mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6, layer_scale=True, interpolate_offset=0.1,
                        interpolate_antialias=False, attn_dim=2304, channel_heads=16),
    description="Panopticon ViT-B/14 (DINOv2 teacher), pretrained on optical, multispectral, hyperspectral and SAR "
                "imagery; any band set via wavelengths=[...] (micrometres, or SAR names VV/VH/HH/HV); its "
                "unslimmed channel-attention stem is most of its compute",
    spec=_SPEC,
    pooled="class token after the final norm (DINOv2 x_norm_clstoken)",
    checkpoint=DINOV2_CHECKPOINT,
    weights_url="https://hf.co/lewaldm/panopticon/resolve/c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7/"
                "panopticon_vitb14_teacher.pth",
    paper="Waldmann et al., Panopticon: Advancing Any-Sensor Foundation Models for Earth Observation, "
          "arXiv:2503.10845",
))
