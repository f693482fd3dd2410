"""DOFA (Xiong et al., 2024): ViTs whose patch-embedding kernel is generated from the band wavelengths.

Facts from the official code: ``zhu-xlab/DOFA`` ``dofa_v1.py@3c33a240`` (``OFAViT``),
``dofa_v2.py@a414125a`` (``DOFAViT``), ``xiong-zhitong/DOFA-pytorch`` ``wave_dynamic_layer.py@5b629452``, and
torchgeo 0.8.1 ``torchgeo/models/dofa.py`` (the class behind ``DOFABase16_Weights.DOFA_MAE``):

* Dynamic patch embedding (``patch_embed``): ``waves = sincos_128(λ_µm · 1000)`` -> residual ReLU MLP
  (``fclayer``) -> one post-norm ``nn.TransformerEncoderLayer`` (d 128, 4 heads, FFN 2048, exact GELU, LayerNorm
  eps 1e-5, no dropout) over ``[128 weight tokens; C wave tokens; 1 bias token]`` -> ``W = fc_weight(out_waves +
  waves)`` ``[C, k·k·D]``, ``b = fc_bias(out_bias)``. The kernel uses the NEW layout
  ``W.view(C, k, k, D).permute(3, 0, 1, 2)`` (torchgeo's re-released weights, DOFA-pytorch, DOFA v2). The original
  ``DOFA_ViT_*_e100.pth`` files were trained with the old ``W.view(D, C, k, k)`` and are not supported here.
* ``conv2d(x, 0.01·W, 0.01·b, stride=k, padding=1)``: the first patch row/column sees the zero pad and the last
  pixel row/column is dropped; for image sizes that are multiples of ``k`` the grid is still ``H/k x W/k``.
* v1: cls token, MAE sin-cos ``pos_embed`` (stored), timm blocks (LayerNorm 1e-6), NO final norm over the tokens.
  The classification output is ``fc_norm(mean of patch tokens)`` with ``fc_norm`` in no checkpoint: a LayerNorm at
  its initial value (weight 1, bias 0), which is what a frozen-feature probe of the official or torchgeo model
  sees.
* v2: ``k = 14`` hard-coded, a timm ``VisionTransformer`` (learned ``pos_embed``, LayerScale, ``model.norm``) with
  its keys under ``model.``, plus an unused top-level ``norm``.

The generated kernel depends only on the wavelengths, so it is computed once per wavelength set and kept in a
small cache (:class:`KernelCache`); ``flops()`` still counts the hypernetwork, as one uncached forward pass (and
``FlopCounterMode`` on it) spends it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bands import DOFA_README, ESA_S2, S2_L2A_BANDS, TERRATORCH_DOFA
from ..flops import patch_embed_flops
from ..input_check import check_spectral_list, wavelength_values
from ..model import SlimModel
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import Choice, InputSpec, Option, Source, cite
from .pos_embed import resample_abs_pos_embed
from .stem import patch_embed
from .vit import ViTArch

_META = {"device": "meta"}


def meta_param(*shape: int) -> nn.Parameter:
    """An empty frozen parameter on the meta device (filled by loading or by random init)."""
    return nn.Parameter(torch.empty(*shape, **_META), requires_grad=False)


def linear_params(out_features: int, in_features: int) -> nn.Module:
    """``weight [out, in]`` and ``bias [out]`` under ``nn.Linear``'s key names."""
    m = nn.Module()
    m.weight = meta_param(out_features, in_features)
    m.bias = meta_param(out_features)
    return m


def _norm(dim: int) -> nn.Module:
    m = nn.Module()
    m.weight = meta_param(dim)
    m.bias = meta_param(dim)
    return m


def affine(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x W^T + b`` with the parameters of :func:`linear_params`, in ``x.dtype``."""
    return x @ m.weight.to(x.dtype).T + m.bias.to(x.dtype)


def _layer_norm(m: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], m.weight.to(x.dtype), m.bias.to(x.dtype), eps)


class KernelCache:
    """Generated patch-embedding kernels, keyed by the spectral inputs, bounded (least recently used goes first).

    The entries are dropped whenever a parameter of the hypernetwork changes (new storage after ``to()`` or
    ``load_state_dict``, or an in-place edit), so a hit always equals a fresh computation.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._stamp: tuple = ()
        self.frozen = False

    def freeze(self) -> None:
        """Serve the present entries also while tracing, where parameters are fake tensors that cannot be stamped:
        for a model copy whose weights never change again (``slimkern.export``'s dense copy), so that its kernels
        enter the traced graph as constants."""
        self.frozen = True

    def get(self, key: tuple, params: Iterable[torch.Tensor], make: Callable[[], tuple[torch.Tensor, ...]]
            ) -> tuple[torch.Tensor, ...]:
        if torch.compiler.is_compiling():  # tracing: no storage to stamp, only a frozen entry is known valid
            return self._entries[key] if self.frozen and key in self._entries else make()
        stamp = tuple((p.data_ptr(), p._version) for p in params)
        if stamp != self._stamp:
            self._entries.clear()
            self._stamp = stamp
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = make()
        if self.size > 0:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class HyperPatchEmbed(nn.Module):
    """Parameters (official key names) and forward pass of DOFA's kernel-generating hypernetwork.

    Shared with Copernicus-FM, whose spectral patch embedding differs only in how the per-band embedding
    (``waves``) is formed.
    """

    def __init__(self, planes: int, kernel_size: int, dim: int, weight_tokens: int = 128, heads: int = 4,
                 ffn: int = 2048, eps: float = 1e-5) -> None:
        super().__init__()
        self.planes, self.kernel_size, self.dim = planes, kernel_size, dim
        self.num_weight_tokens, self.heads, self.ffn, self.eps = weight_tokens, heads, ffn, eps
        gen = self.weight_generator = nn.Module()
        gen.weight_tokens = meta_param(weight_tokens, planes)
        gen.bias_token = meta_param(1, planes)
        layer = nn.Module()
        layer.self_attn = nn.Module()
        layer.self_attn.in_proj_weight = meta_param(3 * planes, planes)
        layer.self_attn.in_proj_bias = meta_param(3 * planes)
        layer.self_attn.out_proj = linear_params(planes, planes)
        layer.linear1 = linear_params(ffn, planes)
        layer.linear2 = linear_params(planes, ffn)
        layer.norm1 = _norm(planes)
        layer.norm2 = _norm(planes)
        gen.transformer_encoder = nn.Module()
        gen.transformer_encoder.layers = nn.ModuleList([layer])
        gen.fc_weight = linear_params(kernel_size * kernel_size * dim, planes)
        gen.fc_bias = linear_params(dim, planes)
        self.fclayer = nn.Module()
        self.fclayer.w1 = linear_params(planes, planes)
        self.fclayer.w2 = linear_params(planes, planes)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band embeddings ``[C, planes]`` -> 0.01-scaled conv kernel ``[D, C, k, k]`` and bias ``[D]``."""
        fc = self.fclayer
        waves = waves + F.relu(affine(fc.w2, F.relu(affine(fc.w1, waves))))
        gen = self.weight_generator
        dtype, bands = waves.dtype, waves.shape[0]
        seq = torch.cat([gen.weight_tokens.to(dtype), waves, gen.bias_token.to(dtype)])  # [S, planes]
        layer = gen.transformer_encoder.layers[0]
        attn = layer.self_attn
        qkv = seq @ attn.in_proj_weight.to(dtype).T + attn.in_proj_bias.to(dtype)
        head_dim = self.planes // self.heads
        q, k, v = (t.reshape(-1, self.heads, head_dim).transpose(0, 1) for t in qkv.chunk(3, dim=-1))
        probs = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(head_dim), dim=-1)
        mixed = (probs @ v).transpose(0, 1).reshape(-1, self.planes)
        seq = _layer_norm(layer.norm1, seq + affine(attn.out_proj, mixed), self.eps)  # post-norm
        seq = _layer_norm(layer.norm2, seq + affine(layer.linear2, F.gelu(affine(layer.linear1, seq))), self.eps)
        start = self.num_weight_tokens
        weight = affine(gen.fc_weight, seq[start:start + bands] + waves)  # [C, k*k*D]
        bias = affine(gen.fc_bias, seq[-1])
        k = self.kernel_size
        weight = weight.view(bands, k, k, self.dim).permute(3, 0, 1, 2)  # the new layout
        return 0.01 * weight, 0.01 * bias

    def flops(self, bands: int) -> int:
        """Matmul FLOPs of one :meth:`forward` for ``bands`` bands (what ``FlopCounterMode`` counts)."""
        e, seq = self.planes, self.num_weight_tokens + bands + 1
        residual_mlp = 2 * 2 * bands * e * e
        attention = 2 * seq * e * 3 * e + 2 * 2 * seq * seq * e + 2 * seq * e * e
        ffn = 2 * 2 * seq * e * self.ffn
        heads = 2 * bands * e * self.kernel_size**2 * self.dim + 2 * e * self.dim
        return residual_mlp + attention + ffn + heads

    @torch.no_grad()
    def init_random(self, generator: torch.Generator, bands: int) -> None:
        """Non-trivial weights: ``fc_weight`` is scaled so that the 0.01-scaled kernel keeps about unit gain over
        a ``k x k x bands`` patch (at the official xavier init the embedding barely responds to the input)."""
        kernel_gain = 100 / math.sqrt(self.planes * self.kernel_size**2 * bands)
        for name, p in self.named_parameters():
            if "norm" in name:
                fill = 1.0 if name.endswith("weight") else 0.0
                p.copy_(fill + 0.1 * torch.randn(p.shape, generator=generator))
            elif name.endswith("_token") or name.endswith("_tokens"):
                p.copy_(torch.randn(p.shape, generator=generator))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
            else:
                std = kernel_gain if name == "weight_generator.fc_weight.weight" else p.shape[1] ** -0.5
                p.copy_(std * torch.randn(p.shape, generator=generator))


@dataclass(frozen=True)
class DOFAArch(ViTArch):
    """Architecture of a DOFA encoder; ``load(name, **overrides)`` may replace any field. ``in_chans`` is not
    used: the band set comes with the wavelengths."""

    wv_planes: int = 128



class DOFA(SlimModel):
    """DOFA v1 (``OFAViT`` / torchgeo ``DOFA``): dynamic patch embedding, stored sin-cos positions, no final norm.

    ``run(x, width, wavelengths=[...])``: one wavelength in micrometres per band of ``x``; by default the
    wavelengths of ``cfg.bands`` from the spec's wavelength table (``load(..., wavelength_table=...)``). Other
    image sizes (multiples of the patch size) resample ``pos_embed`` bicubically, as MAE's ``interpolate_pos_embed``
    does at fine-tuning time.
    """

    extra_inputs = ("wavelengths",)
    any_band_count = True  # the kernel is generated for whatever bands the wavelengths describe

    def __init__(self, cfg: ModelCfg, final_norm: bool = False) -> None:
        arch: DOFAArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps, final_norm=final_norm)
        self.cls_token = meta_param(1, 1, arch.dim)
        self.pos_embed = meta_param(1, 1 + arch.grid**2, arch.dim)
        self.patch_embed = HyperPatchEmbed(arch.wv_planes, arch.patch_size, arch.dim)
        self.kernel_cache = KernelCache()

    # -- inputs ------------------------------------------------------------------------------------
    def wavelengths(self, bands: int, wavelengths=None) -> tuple[float, ...]:
        """Validated wavelengths (µm) for ``bands`` bands; ``None`` -> those of ``cfg.bands``."""
        name = self.cfg.name
        if wavelengths is None:
            if bands != len(self.cfg.bands):
                raise ValueError(f"{name}: x has {bands} bands; pass wavelengths=[...] (micrometres, one per band)")
            return self.spectral_inputs(self.cfg.bands)["wavelengths"]
        values = check_spectral_list(name, wavelengths, bands, "wavelengths")
        if max(values) > 100:
            raise ValueError(f"{name}: wavelengths {list(values)} look like nanometres; DOFA takes micrometres "
                             f"(e.g. 0.665 for Sentinel-2 B04, 5.405 for Sentinel-1)")
        if min(values) <= 0:
            raise ValueError(f"{name}: wavelengths must be positive (micrometres), got {list(values)}")
        return values

    def spectral_inputs(self, bands: Sequence[str]) -> dict[str, tuple[float, ...]]:
        """``wavelengths`` (µm) of canonical ``bands`` from the spec's wavelength table."""
        table = self.spec.wavelengths
        missing = [b for b in bands if table.wavelength(b) is None]
        if missing:
            raise ValueError(f"{self.cfg.name}: the {table.name!r} wavelength table has no {', '.join(missing)}; "
                             f"it lists {', '.join(table.bands)} (or pass wavelengths=[...] in micrometres to run())")
        return {"wavelengths": tuple(table.wavelength(b) for b in bands)}

    def input_wavelengths_um(self, inputs: dict) -> tuple[float, ...]:
        return wavelength_values(inputs.get("wavelengths"))

    def spectral_embedding(self, wavelengths: tuple[float, ...]) -> torch.Tensor:
        """``[C, wv_planes]``: sin-cos of ``λ·1000`` (``[sin | cos]`` halves, ``ω_i = 10000^(-i/64)``).

        Computed in float32 step by step as the official code does: the trained hypernetwork has only ever seen
        these values, and at ``λ·1000 ~ 2000`` float32 rounding moves the phases by ~1e-4.
        """
        planes = self.cfg.arch.wv_planes
        pos = torch.tensor(wavelengths, dtype=torch.float32) * 1000
        omega = 1.0 / 10000 ** (torch.arange(planes // 2, dtype=torch.float32) / (planes / 2.0))
        angles = pos[:, None] * omega
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    def conv_kernel(self, wavelengths: tuple[float, ...], dtype: torch.dtype, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated kernel and bias in ``dtype`` (computed in at least float32; cached per wavelength set)."""
        compute = torch.promote_types(dtype, torch.float32)

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = self.patch_embed(self.spectral_embedding(wavelengths).to(device, compute))
            return weight.to(dtype).contiguous(), bias.to(dtype)  # contiguous: the stem GEMM views it, no per-call copy

        return self.kernel_cache.get((wavelengths, dtype, device), self.patch_embed.parameters(), make)

    # -- family hooks ------------------------------------------------------------------------------
    def stem_flops(self, height: int, width: int) -> int:
        """The patch convolution plus one pass of the hypernetwork (what an uncached forward computes)."""
        arch, bands = self.cfg.arch, len(self.cfg.bands)
        patches = self.num_tokens(height, width) - self.num_prefix_tokens
        return patch_embed_flops(patches, bands, arch.patch_size, arch.dim) + self.patch_embed.flops(bands)

    def embed(self, x: torch.Tensor, wavelengths=None) -> torch.Tensor:
        waves = self.wavelengths(x.shape[1], wavelengths)
        weight, bias = self.conv_kernel(waves, x.dtype, x.device)
        tokens, grid = patch_embed(x, weight, bias, self.cfg.arch.patch_size, padding=1)
        pos = self.pos_embed.to(x.dtype)
        if grid != (self.cfg.arch.grid,) * 2:
            pos = resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                         antialias=False)
        cls = (self.cls_token.to(x.dtype) + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``fc_norm(mean of the patch tokens)`` with ``fc_norm`` at its initial value (it is in no checkpoint)."""
        return F.layer_norm(tokens[:, self.num_prefix_tokens:].mean(dim=1), (self.dim,), eps=self.norm_eps)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        self.patch_embed.init_random(generator, len(self.cfg.bands))
        self.cls_token.copy_(0.5 * torch.randn(self.cls_token.shape, generator=generator))
        self.pos_embed.copy_(0.5 * torch.randn(self.pos_embed.shape, generator=generator))


class DOFAv2(DOFA):
    """DOFA v2 (``DOFAViT``): ``k = 14``, learned ``pos_embed``, LayerScale and a final norm (``model.norm``).

    The official v2 code defines no classification output (it returns intermediate feature maps); the pooled
    embedding here follows the DOFA family's global-pool convention: the mean of the final-normed patch tokens.
    """

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__(cfg, final_norm=True)

    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``model.*`` (the wrapped timm ViT) -> top-level names; ``patch_embed.*`` is already top level."""
        return {key.removeprefix("model."): value for key, value in state.items()}

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prefix_tokens:].mean(dim=1)


_V1_FORMAT = CheckpointFormat(container_keys=(), strip_prefixes=("module.",), drop_prefixes=())
# The flat file loaded with strict=True by dofa_v2.py; its top-level ``norm.*`` is never used in the forward pass
# (the timm ViT's own ``model.norm`` is).
_V2_FORMAT = CheckpointFormat(container_keys=(), strip_prefixes=("module.",), drop_prefixes=("norm.",))
_PAPER = "Xiong et al., Neural Plasticity-Inspired Multimodal Foundation Model for Earth Observation, arXiv 2403.15356"
_LICENSE = "MIT (code, zhu-xlab/DOFA); the weights' terms are not stated"
_README = Source("readme", "https://github.com/zhu-xlab/DOFA README (any band set with its wavelengths; inputs "
                           "standardised per sensor with the data set's own statistics)")
_PAPER_SOURCE = Source("paper", "Xiong et al., DOFA (arXiv:2403.15356): SatlasPretrain, Five-Billion-Pixels, "
                                "HySpecNet-11k, ... at their sensors' own GSDs")
WAVELENGTH_TABLE = Choice("wavelength_table", "dofa", (
    Option("dofa", DOFA_README.source, "DOFA README values (B08 0.842, B12 2.19 um); B01, B8A, B09 from TerraTorch",
           wavelengths=DOFA_README),
    Option("esa", ESA_S2.source, "ESA's rounded Sentinel-2 centre wavelengths (B8A 0.865, B09 0.945 um)",
           wavelengths=ESA_S2),
    Option("terratorch", TERRATORCH_DOFA.source, "TerraTorch's DOFA table (B08 0.832, B12 2.20 um)",
           wavelengths=TERRATORCH_DOFA),
))


def _spec(patch_size: int) -> InputSpec:
    code = Source("code", "zhu-xlab/DOFA dofa_v1.py@3c33a240 / dofa_v2.py@a414125a (img_size 224, patch "
                          f"{patch_size})")
    return InputSpec(
        sensor="any optical or SAR sensor, via wavelengths (Sentinel-2 L2A bands by default)", bands=S2_L2A_BANDS,
        wavelengths=DOFA_README, unit="any", quantification=1.0, scale=1.0, offset=0.0, normalization="dataset",
        mean=None, std=None, image_size=224, patch_size=patch_size, gsd_m=None, frames=1,
        pretraining_data="SatlasPretrain, Five-Billion-Pixels, HySpecNet-11k (DOFA)", any_bands=True,
        sources=cite(sensor=_README, bands=_README, units=_README, normalization=_README, image_size=code,
                     patch_size=code, gsd_m=_PAPER_SOURCE, frames=code, pretraining_data=_PAPER_SOURCE),
        choices=(WAVELENGTH_TABLE,),
    )


_V1_POOLED = ("LayerNorm without affine (fc_norm at its initial value; not in the checkpoint) over the mean of the "
              "patch tokens; tokens carry no final norm (as torchgeo's DOFA)")
_V1_DESCRIPTION = ("DOFA {size} v1 ViT-{short}/16, MAE-pretrained on SatlasPretrain, Five-Billion-Pixels and "
                   "HySpecNet-11k; wavelength-conditioned patch embedding (new kernel layout, torchgeo's weights); "
                   "12 Sentinel-2 L2A bands by default, other wavelengths via wavelengths=[...] (micrometres); "
                   "flops() includes the kernel hypernetwork, which is cached per wavelength set")


def _register_v1(size: str, dim: int, depth: int, num_heads: int, file: str) -> None:
    register_model(ModelCfg(
        name=f"dofa_{size}",
        aliases=(f"dofa_{size}_patch16_224",),
        family="dofa",
        model_cls=DOFA,
        arch=DOFAArch(patch_size=16, dim=dim, depth=depth, num_heads=num_heads),
        description=_V1_DESCRIPTION.format(size=size, short=size[0].upper()),
        spec=_spec(16),
        pooled=_V1_POOLED,
        checkpoint=_V1_FORMAT,
        weights_url=f"https://hf.co/torchgeo/dofa/resolve/b8db318b64a90b9e085ec04ba8851233c5893666/{file}",
        license=_LICENSE,
        paper=_PAPER,
    ))


_V2_POOLED = ("mean of the final-normed (model.norm) patch tokens; the official v2 code defines no classification "
              "output, this follows the DOFA global-pool convention")

def _register_v2(size: str, dim: int, depth: int, num_heads: int) -> None:
    register_model(ModelCfg(
        name=f"dofa_v2_{size}",
        family="dofa",
        model_cls=DOFAv2,
        arch=DOFAArch(patch_size=14, dim=dim, depth=depth, num_heads=num_heads, layer_scale=True),
        description=(f"DOFA v2 {size} ViT-{size[0].upper()}/14 (150 epochs): wavelength-conditioned patch "
                     "embedding, learned positions, LayerScale; 12 Sentinel-2 L2A bands by default, other "
                     "wavelengths via wavelengths=[...] (micrometres); flops() includes the kernel hypernetwork"),
        spec=_spec(14),
        pooled=_V2_POOLED,
        checkpoint=_V2_FORMAT,
        weights_url=f"https://huggingface.co/earthflow/DOFA/resolve/main/dofav2_vit_{size}_e150.pth",
        license=_LICENSE,
        paper=_PAPER,
    ))


_register_v1("base", 768, 12, 12, "dofa_base_patch16_224-a0275954.pth")
_register_v1("large", 1024, 24, 16, "dofa_large_patch16_224-0ff904d3.pth")
_register_v2("base", 768, 12, 12)
_register_v2("large", 1024, 24, 16)
