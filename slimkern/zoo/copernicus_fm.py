"""Copernicus-FM (Wang et al., 2025): a ViT-B/16 with a DOFA-style hypernetwork patch embedding and metadata
embeddings.

Facts from the official code, ``zhu-xlab/Copernicus-FM`` ``Copernicus-Bench/src/foundation_models/CopernicusFM/``
(``models_dwv.py@5d8535f3``, ``dynamic_hypernetwork.py@36523a36``), and torchgeo 0.8.1
``torchgeo/models/copernicusfm.py`` (``copernicusfm_base``, whose weights file this model loads):

* Spectral patch embedding (``patch_embed_spectral``): per band ``waves = F(λ_nm; 100 nm .. 1 m) + F(Δλ_nm;
  1 nm .. 1 m)`` with Aurora's Fourier expansion ``F(x) = [sin(2πx/w_j) | cos(2πx/w_j)]``, ``w_j`` log-spaced over
  the range (128 dims, float64), then exactly DOFA's hypernetwork (:class:`~slimkern.zoo.dofa.HyperPatchEmbed`: new
  kernel layout, 0.01 scaling, ``conv2d(..., stride=16, padding=1)``).
* Metadata ``[lon°, lat°, days since 1970-01-01, patch-token area km²]`` adds ``coord_fc(F(lon+180) | F(lat+90))``
  (0.0001..720), ``scale_fc(F(area))`` (0.001..5.1e8 km²) and ``time_fc(F(days))`` (1..365.25 days) to every
  position, cls included. An unknown value (NaN) uses the learned ``coord_token`` / ``scale_token`` /
  ``time_token`` instead (before the ``*_fc``). The official code falls back for the WHOLE batch when any sample
  has a NaN; here each sample falls back on its own (identical for batches with all or none known, and equal to
  running each sample alone).
* cls token, stored sin-cos ``pos_embed`` resized bicubically with antialiasing for other grids (FlexiViT's
  ``resize_abs_pos_embed``), timm blocks with LayerNorm eps 1e-6 (torchgeo's class defaults to 1e-5), no final
  norm; classification output ``fc_norm(mean of patch tokens)`` with ``fc_norm`` in no checkpoint (a LayerNorm at
  its initial value).

Not supported: the variable mode (a Llama-3.2 language embedding of the variable name drives
``patch_embed_variable``, whose keys are dropped on load) and the ``kernel_size`` argument (FlexiViT
pseudo-inverse resize of the generated kernel to another patch size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..bands import COPERNICUS_BENCH_S2, ESA_S2, S2_L2A_BANDS
from ..flops import patch_embed_flops
from ..input_check import check_spectral_list, wavelength_values
from ..model import SlimModel
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import Choice, InputSpec, Option, Source, cite
from .dofa import (
    DOFAArch,
    HyperPatchEmbed,
    KernelCache,
    affine,
    linear_params,
    meta_param,
)
from .stem import patch_embed

# (lower, upper) of each Fourier expansion, as the official modules are constructed
_CENTRAL, _BANDWIDTH = (100.0, 1e9), (1.0, 1e9)
_COORD, _AREA, _TIME = (0.0001, 720.0), (0.001, 5.1e8), (1.0, 365.25)
_RADAR_NM = 1e6  # 1 mm: longer waves are radar (Copernicus-Bench's Sentinel-1 configs use 5e7 nm)


def fourier_frequencies(lower: float, upper: float, count: int) -> list[float]:
    """``2π / w_j`` for ``w_j = torch.logspace(log10(lower), log10(upper), count)`` in float64, bit for bit (the same
    two-sided linspace, then ``reciprocal * 2π`` as torch's ``2π / tensor``), as Python floats. A traced graph then
    holds them as one exact constant: the ONNX exporter rounds both the logspace and the scalar 2π to float32, which
    moves the 1e-4-period coordinate features by whole turns."""
    start, end = math.log10(lower), math.log10(upper)
    if count == 1:
        exponents = [start]
    else:
        step = (end - start) / (count - 1)
        exponents = [start + i * step if i < count // 2 else end - (count - 1 - i) * step for i in range(count)]
    return [(1.0 / 10.0**e) * (2 * math.pi) for e in exponents]


def fourier_expansion(x: torch.Tensor, lower: float, upper: float, dim: int) -> torch.Tensor:
    """Aurora's ``FourierExpansion`` in float64: ``[..., dim]`` = sin | cos of ``2πx / w_j``, ``w_j`` log-spaced."""
    frequencies = torch.tensor(fourier_frequencies(lower, upper, dim // 2), dtype=torch.float64)
    angles = x.to(torch.float64)[..., None] * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class CopernicusFM(SlimModel):
    """Copernicus-FM encoder in spectral mode.

    ``run(x, width, wavelengths=[...], bandwidths=[...], metadata=m)``: centre wavelengths and bandwidths in
    NANOMETRES, one per band (by default those of ``cfg.bands`` from the spec's wavelength table, see
    ``load(..., wavelength_table=...)``; give both or neither); ``metadata`` ``[B, 4]`` =
    longitude (degrees), latitude (degrees), days since 1970-01-01, area of one patch token (km²), NaN where
    unknown; omitted = all unknown.
    """

    extra_inputs = ("wavelengths", "bandwidths", "metadata")
    any_band_count = True  # the hypernetwork builds the kernel for the bands the spectra describe

    def __init__(self, cfg: ModelCfg) -> None:
        arch: DOFAArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps, final_norm=False)
        if arch.dim % 4:
            raise ValueError(f"{cfg.name}: dim {arch.dim} must be divisible by 4 (lon and lat take dim/2 Fourier "
                             "features each)")
        self.cls_token = meta_param(1, 1, arch.dim)
        self.pos_embed = meta_param(1, 1 + arch.grid**2, arch.dim)
        self.patch_embed_spectral = HyperPatchEmbed(arch.wv_planes, arch.patch_size, arch.dim)
        self.coord_fc = linear_params(arch.dim, arch.dim)
        self.scale_fc = linear_params(arch.dim, arch.dim)
        self.time_fc = linear_params(arch.dim, arch.dim)
        self.coord_token = meta_param(1, 1, arch.dim)
        self.scale_token = meta_param(1, 1, arch.dim)
        self.time_token = meta_param(1, 1, arch.dim)
        self.kernel_cache = KernelCache()

    # -- inputs ------------------------------------------------------------------------------------
    def spectra(self, bands: int, wavelengths=None, bandwidths=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Validated ``(wavelengths, bandwidths)`` in nm; both ``None`` -> the defaults of ``cfg.bands``."""
        name = self.cfg.name
        if wavelengths is None and bandwidths is None:
            if bands != len(self.cfg.bands):
                raise ValueError(f"{name}: x has {bands} bands; pass wavelengths=[...] and bandwidths=[...] "
                                 "(nanometres, one per band)")
            defaults = self.spectral_inputs(self.cfg.bands)
            return defaults["wavelengths"], defaults["bandwidths"]
        if wavelengths is None or bandwidths is None:
            given, missing = ("wavelengths", "bandwidths") if bandwidths is None else ("bandwidths", "wavelengths")
            raise ValueError(f"{name}: got {given} but no {missing}; pass both (nanometres, one per band) or neither "
                             f"(the defaults for {', '.join(self.cfg.bands)})")
        waves = check_spectral_list(name, wavelengths, bands, "wavelengths")
        widths = check_spectral_list(name, bandwidths, bands, "bandwidths")
        for what, values, (lower, upper), example in (("wavelengths", waves, _CENTRAL, "665 for Sentinel-2 B04"),
                                                      ("bandwidths", widths, _BANDWIDTH, "30 for Sentinel-2 B04")):
            bad = [v for v in values if not lower <= v <= upper]
            if bad:
                hint = " (they look like micrometres)" if max(bad) < lower else ""
                raise ValueError(f"{name}: {what} {list(values)} must lie in [{lower:g}, {upper:g}] nm{hint}; "
                                 f"Copernicus-FM takes nanometres, e.g. {example}")
        return waves, widths

    def spectral_inputs(self, bands) -> dict[str, tuple[float, ...]]:
        """``wavelengths`` and ``bandwidths`` (nm) of canonical ``bands`` from the spec's wavelength table."""
        table = self.spec.wavelengths
        missing = [b for b in bands if table.wavelength(b) is None or table.bandwidth(b) is None]
        if missing:
            raise ValueError(f"{self.cfg.name}: the {table.name!r} wavelength table has no {', '.join(missing)}; it "
                             f"lists {', '.join(table.bands)} (or pass wavelengths=[...] and bandwidths=[...] in "
                             "nanometres to run())")
        return {"wavelengths": tuple(round(table.wavelength(b) * 1000, 6) for b in bands),
                "bandwidths": tuple(table.bandwidth(b) for b in bands)}

    def input_wavelengths_um(self, inputs: dict) -> tuple[float, ...]:
        """The optical wavelengths of ``inputs`` in micrometres; radar ones (1 mm and longer) are not optical."""
        return tuple(nm / 1000 for nm in wavelength_values(inputs.get("wavelengths")) if nm < _RADAR_NM)

    def check_metadata(self, metadata, batch: int) -> torch.Tensor:
        """``[B, 4]`` float32 on the CPU (NaN = unknown), ranges checked; ``None`` -> all unknown.

        float32, because the official data pipeline hands the model float32 metadata and the finest coordinate
        features (a 0.0001-degree period) resolve its rounding.
        """
        name = self.cfg.name
        if metadata is None:
            return torch.full((batch, 4), float("nan"))
        if not isinstance(metadata, torch.Tensor):
            raise TypeError(f"{name}: metadata must be a tensor [B, 4] (lon, lat, days since 1970-01-01, patch area "
                            f"km²; NaN = unknown), got {type(metadata).__name__}")
        if tuple(metadata.shape) != (batch, 4):
            raise ValueError(f"{name}: metadata must have shape ({batch}, 4) = (batch, [lon, lat, days since "
                             f"1970-01-01, patch area km²]), got {tuple(metadata.shape)}")
        if not metadata.is_floating_point():
            raise TypeError(f"{name}: metadata must be floating point (NaN marks unknown values), got {metadata.dtype}")
        meta = metadata.detach().to("cpu", torch.float32)
        if torch.compiler.is_compiling():  # a traced graph cannot branch on the values
            return meta
        if bool(torch.isinf(meta).any()):
            raise ValueError(f"{name}: metadata contains Inf; use NaN for unknown values")
        lon, lat, _, area = meta.unbind(1)
        for what, values, lower, upper in (("longitude", lon, -180.0, 180.0), ("latitude", lat, -90.0, 90.0),
                                           ("patch area (km²)", area, _AREA[0], _AREA[1])):
            known = values[~torch.isnan(values)]
            if bool(((known < lower) | (known > upper)).any()):
                raise ValueError(f"{name}: metadata {what} must lie in [{lower:g}, {upper:g}], got "
                                 f"{known.tolist()} (columns: lon, lat, days since 1970-01-01, patch area km²)")
        return meta

    def spectral_embedding(self, waves: tuple[float, ...], widths: tuple[float, ...]) -> torch.Tensor:
        """``[C, wv_planes]`` float64; the values are rounded to float32 first, as the official code does."""
        planes = self.cfg.arch.wv_planes
        central = torch.tensor(waves, dtype=torch.float32)
        width = torch.tensor(widths, dtype=torch.float32)
        return fourier_expansion(central, *_CENTRAL, planes) + fourier_expansion(width, *_BANDWIDTH, planes)

    def conv_kernel(self, waves: tuple[float, ...], widths: tuple[float, ...], dtype: torch.dtype,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated kernel and bias in ``dtype`` (computed in at least float32; cached per spectral set)."""
        compute = torch.promote_types(dtype, torch.float32)

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = self.patch_embed_spectral(self.spectral_embedding(waves, widths).to(device, compute))
            return weight.to(dtype).contiguous(), bias.to(dtype)  # contiguous: the stem GEMM views it, no per-call copy

        return self.kernel_cache.get((waves, widths, dtype, device), self.patch_embed_spectral.parameters(), make)

    def metadata_embedding(self, meta: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``[B, 1, D]``: the sum of the coordinate, area and time embeddings (learned token where unknown).

        ``lon + 180`` and ``lat + 90`` are formed in float32, as in the official code.
        """
        dim = self.dim
        lon, lat, days, area = meta.nan_to_num(0.0).unbind(1)
        nan = torch.isnan(meta)
        coord = torch.cat([fourier_expansion(lon + 180, *_COORD, dim // 2),
                           fourier_expansion(lat + 90, *_COORD, dim // 2)], dim=1)
        parts = (
            (coord, nan[:, 0] | nan[:, 1], self.coord_token, self.coord_fc),
            (fourier_expansion(area, *_AREA, dim), nan[:, 3], self.scale_token, self.scale_fc),
            (fourier_expansion(days, *_TIME, dim), nan[:, 2], self.time_token, self.time_fc),
        )
        total = 0
        for features, unknown, token, fc in parts:
            features = features.to(device, dtype)
            features = torch.where(unknown.to(device)[:, None], token.to(dtype).reshape(1, dim), features)
            total = total + affine(fc, features)
        return total[:, None]

    # -- family hooks ------------------------------------------------------------------------------
    def stem_flops(self, height: int, width: int) -> int:
        """The patch convolution, one pass of the hypernetwork and the three metadata projections."""
        arch, bands = self.cfg.arch, len(self.cfg.bands)
        patches = self.num_tokens(height, width) - self.num_prefix_tokens
        return (patch_embed_flops(patches, bands, arch.patch_size, arch.dim)
                + self.patch_embed_spectral.flops(bands) + 3 * 2 * arch.dim * arch.dim)

    def embed(self, x: torch.Tensor, wavelengths=None, bandwidths=None, metadata=None) -> torch.Tensor:
        waves, widths = self.spectra(x.shape[1], wavelengths, bandwidths)
        meta = self.check_metadata(metadata, x.shape[0])
        weight, bias = self.conv_kernel(waves, widths, x.dtype, x.device)
        tokens, grid = patch_embed(x, weight, bias, self.cfg.arch.patch_size, padding=1)
        pos = self.pos_embed.to(x.dtype)
        if grid != (self.cfg.arch.grid,) * 2:
            side = self.cfg.arch.grid
            patches = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
            patches = F.interpolate(patches, size=grid, mode="bicubic", antialias=True)
            pos = torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, self.dim).to(x.dtype)], dim=1)
        pos = pos + self.metadata_embedding(meta, x.dtype, x.device)  # [B, 1 + N, D]
        cls = self.cls_token.to(x.dtype) + pos[:, :1]
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``fc_norm(mean of the patch tokens)`` with ``fc_norm`` at its initial value (it is in no checkpoint)."""
        return F.layer_norm(tokens[:, self.num_prefix_tokens:].mean(dim=1), (self.dim,), eps=self.norm_eps)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        self.patch_embed_spectral.init_random(generator, len(self.cfg.bands))
        for p in (self.cls_token, self.pos_embed, self.coord_token, self.scale_token, self.time_token):
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
        for fc in (self.coord_fc, self.scale_fc, self.time_fc):
            fc.weight.copy_(self.dim**-0.5 * torch.randn(fc.weight.shape, generator=generator))
            fc.bias.copy_(0.02 * torch.randn(fc.bias.shape, generator=generator))


_PAPER = Source("paper", "Wang et al., Towards a Unified Copernicus Foundation Model for Earth Vision "
                        "(arXiv:2503.11849): Copernicus-Pretrain")
_BENCH = COPERNICUS_BENCH_S2.source
_TORCHGEO = Source("code", "torchgeo 0.8.1 torchgeo/models/copernicusfm.py (LayerNorm eps 1e-5)")
_OFFICIAL = Source("code", "zhu-xlab/Copernicus-FM@5d8535f3 Copernicus-Bench/src/foundation_models/CopernicusFM/"
                           "models_dwv.py (LayerNorm eps 1e-6)")
_SPEC = InputSpec(
    sensor="Sentinel-2 L2A (Copernicus-Pretrain; other Copernicus sensors through explicit spectra)",
    bands=S2_L2A_BANDS, wavelengths=COPERNICUS_BENCH_S2, unit="DN", quantification=10000.0, scale=1.0, offset=0.0,
    normalization="standardize",
    mean=(1353.7, 1117.2, 1041.8, 946.5, 1199.1, 2003.0, 2374.0, 2301.2, 2599.7, 732.1, 1820.6, 1118.2),
    std=(897.3, 736.0, 684.8, 620.0, 791.9, 1341.3, 1595.4, 1545.5, 1750.1, 475.1, 1216.5, 736.7),
    image_size=224, patch_size=16, gsd_m=10.0, frames=1, pretraining_data="Copernicus-Pretrain", any_bands=True,
    sources=cite(sensor=_BENCH, bands=_BENCH, units=_BENCH, normalization=_BENCH, image_size=_BENCH,
                 patch_size=_BENCH, gsd_m=_PAPER, frames=_BENCH, pretraining_data=_PAPER),
    choices=(
        Choice("wavelength_table", "copernicus_fm", (
            Option("copernicus_fm", _BENCH, "Copernicus-Bench's S2 values (B01 440, B8A 860, B09 940 nm)",
                   wavelengths=COPERNICUS_BENCH_S2),
            Option("esa", ESA_S2.source, "ESA's values (B01 443, B8A 865, B09 945 nm), same bandwidths",
                   wavelengths=ESA_S2))),
        Choice("layer_norm", "official", (
            Option("official", _OFFICIAL, "LayerNorm eps 1e-6 in every block", arch=(("norm_eps", 1e-6),)),
            Option("torchgeo", _TORCHGEO, "LayerNorm eps 1e-5 (torchgeo's class default)",
                   arch=(("norm_eps", 1e-5),)))),
    ),
)

register_model(ModelCfg(
    name="copernicus_fm_base",
    aliases=("copernicusfm_base",),
    family="copernicus_fm",
    model_cls=CopernicusFM,
    arch=DOFAArch(patch_size=16, dim=768, depth=12, num_heads=12),
    description=("Copernicus-FM ViT-B/16 (MAE + distillation on Copernicus-Pretrain), spectral mode: "
                 "hypernetwork patch embedding from band wavelengths and bandwidths (nanometres) plus lon/lat, "
                 "time and area embeddings; 12 Sentinel-2 L2A bands by default; flops() includes the kernel "
                 "hypernetwork, which is cached per spectral set; the variable (language) mode is not supported"),
    spec=_SPEC,
    pooled=("LayerNorm without affine (fc_norm at its initial value; not in the checkpoint) over the mean of the "
            "patch tokens; tokens carry no final norm"),
    checkpoint=CheckpointFormat(
        container_keys=("model",),
        strip_prefixes=("module.",),
        drop_prefixes=("patch_embed_variable.",),  # the language-driven hypernetwork (variable mode)
    ),
    weights_url="https://huggingface.co/torchgeo/copernicus-fm/resolve/f395812cc990ba25a451dbb9c9e6d95c8482947e/"
                "CopernicusFM_ViT_base_varlang-085350e4.pth",
    license="Apache-2.0 (code, zhu-xlab/Copernicus-FM, with MIT and CC BY-NC 4.0 third-party parts)",
    paper="Wang et al., Towards a Unified Copernicus Foundation Model for Earth Vision, arXiv 2503.11849",
))
