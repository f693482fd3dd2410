"""CROMA (Fuller et al., NeurIPS 2023): contrastive radar-optical masked autoencoders.

Facts from the official code, ``antofuller/CROMA`` ``main_croma.py`` / ``use_croma.py`` (``PretrainedCROMA``,
``ViT``, ``BaseTransformer``, ``BaseTransformerCrossAttn``, ``get_2dalibi``):

- three encoders: optical (Sentinel-2, 12 bands, ``depth`` layers), radar (Sentinel-1, 2 bands, ``depth / 2``)
  and joint (``depth / 2`` layers: self-attention on the radar tokens, cross-attention with queries from them and
  keys/values from the optical tokens, FFN); 16 heads for both sizes, patch 8, 120 px, no class token and no
  position embedding;
- the stem is a linear layer over patches flattened as ``(c i j)`` (channel slowest), equal to a stride-8 conv;
- attention layers own their pre-norm (``input_norm``, eps 1e-5), ``to_qkv`` has no bias, ``to_out`` has one;
  the cross-attention applies its one ``input_norm`` to both the tokens and the context;
- every self- and cross-attention adds the 2-D ALiBi bias ``-slope_h * ||p_i - p_j||`` (patch units, row-major
  patches) to its logits, rebuilt for the image size;
- outputs: ``*_encodings`` are the tokens after each encoder's ``norm_out``; ``optical_GAP`` / ``SAR_GAP`` are
  ``GAP_FFN(mean of tokens)`` with ``GAP_FFN = LayerNorm, Linear(d, 4d), GELU, Linear(4d, d)``; ``joint_GAP`` is
  the mean of the joint tokens;
- inputs: the README rescales every band by the statistics of the data it is given (see :meth:`CROMA.normalize`).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backends import Backend
from ..bands import ESA_S2, S2_L2A_BANDS, SAR_NONE, merged
from ..blocks import Block, BlockSpec, linear_params, norm_params
from ..flops import patch_embed_flops, stack_flops
from ..model import SlimModel
from ..plan import SlimPlan, make_plan
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .stem import patch_embed

#: Sentinel-2 bands of the optical encoder (L1C/L2A without the cirrus band B10). The order is not stated in the
#: official code (an open question): this is the SSL4EO-S12 order the pre-training data used, minus B10.
OPTICAL_BANDS = S2_L2A_BANDS
#: Sentinel-1 bands of the radar encoder (same caveat: SSL4EO-S12 order).
RADAR_BANDS = ("VV", "VH")
MODALITIES = ("optical", "radar", "joint")
#: The official file is a dict of these sub-state-dicts, one per module.
SUB_STATE_DICTS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")


@dataclass(frozen=True)
class CROMAArch:
    """Architecture of a CROMA model; ``load(name, **overrides)`` may replace any field.

    ``depth`` is the optical encoder's depth; the radar and joint encoders have ``depth // 2`` layers each
    (the official ``int(encoder_depth / 2)``).
    """

    img_size: int = 120
    patch_size: int = 8
    dim: int = 768
    depth: int = 12
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 (the radar and joint encoders have depth // 2 layers), "
                             f"got {self.depth}")

    def block_spec(self, cross_attn: bool = False) -> BlockSpec:
        return BlockSpec(dim=self.dim, num_heads=self.num_heads, head_dim=self.dim // self.num_heads,
                         mlp_hidden=int(self.dim * self.mlp_ratio), qkv_bias=False, proj_bias=True, mlp_bias=True,
                         norm_eps=self.norm_eps, cross_attn=cross_attn)


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi head slopes as the official ``get_slopes``: ``s^(h+1)`` with ``s = 2^(-8 / n)`` for a power-of-two
    ``n`` heads (``2^(-0.5 (h+1))`` for 16); otherwise the slopes of the largest power of two below ``n``, then
    every other slope of twice that many heads."""
    if math.log2(num_heads).is_integer():
        start = 2.0 ** (-8.0 / num_heads)
        return [start ** (h + 1) for h in range(num_heads)]
    lower = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(lower) + alibi_slopes(2 * lower)[0::2][: num_heads - lower]


@functools.lru_cache(maxsize=4)
def alibi_2d(num_heads: int, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """CROMA's 2-D ALiBi ``[H, N, N]``: ``bias[h, i, j] = -slope_h * ||p_i - p_j||`` over row-major patches of a
    ``grid_h x grid_w`` grid, in patch units (built in float64, cached per grid, device and dtype).

    The official code builds it for square grids only; a rectangular grid uses the same formula.
    """
    rows = torch.arange(grid_h, dtype=torch.float64).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, dtype=torch.float64).repeat(grid_h)
    dist = torch.sqrt((rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2)
    slopes = torch.tensor(alibi_slopes(num_heads), dtype=torch.float64)
    return (-slopes[:, None, None] * dist).to(device=device, dtype=dtype)


# official key (flattened) -> this model's key; {i} is a layer index
_LAYER = {
    r"0\.input_norm\.": "norm1.", r"0\.to_qkv\.": "attn.qkv.", r"0\.to_out\.": "attn.proj.",
    r"1\.input_norm\.": "norm2.", r"1\.net\.0\.": "mlp.fc1.", r"1\.net\.3\.": "mlp.fc2.",
}
_JOINT_LAYER = {
    r"0\.input_norm\.": "norm1.", r"0\.to_qkv\.": "attn.qkv.", r"0\.to_out\.": "attn.proj.",
    r"1\.input_norm\.": "norm_cross.", r"1\.to_q\.": "cross_attn.q.", r"1\.to_k\.": "cross_attn.k.",
    r"1\.to_v\.": "cross_attn.v.", r"1\.to_out\.": "cross_attn.proj.",
    r"2\.input_norm\.": "norm2.", r"2\.net\.0\.": "mlp.fc1.", r"2\.net\.3\.": "mlp.fc2.",
}
_GAP = {r"0\.": "norm.", r"1\.": "fc1.", r"3\.": "fc2."}


def _renames() -> list[tuple[re.Pattern, str]]:
    table = []
    for top, prefix in (("s2", ""), ("s1", "radar.")):
        table.append((rf"{top}_encoder\.linear_input\.", f"{prefix}patch_embed."))
        table.append((rf"{top}_encoder\.transformer\.norm_out\.", f"{prefix}norm."))
        table += [(rf"{top}_encoder\.transformer\.layers\.(\d+)\.{old}", rf"{prefix}blocks.\1.{new}")
                  for old, new in _LAYER.items()]
        table += [(rf"{top}_GAP_FFN\.{old}", f"{prefix}gap_ffn.{new}") for old, new in _GAP.items()]
    table.append((r"joint_encoder\.norm_out\.", "joint.norm."))
    table += [(rf"joint_encoder\.layers\.(\d+)\.{old}", rf"joint.blocks.\1.{new}") for old, new in _JOINT_LAYER.items()]
    return [(re.compile(pattern), new) for pattern, new in table]


_RENAMES = _renames()


def _gap_ffn(dim: int, hidden: int) -> nn.Module:
    head = nn.Module()
    head.norm = norm_params(dim)
    head.fc1 = linear_params(hidden, dim, bias=True)
    head.fc2 = linear_params(dim, hidden, bias=True)
    return head


class CROMA(SlimModel):
    """CROMA's optical, radar and joint radar-optical encoders in one model; the input's band count picks which run.

    ============  ===============================  ======================================================
    bands         modality (blocks that run)       pooled (``output="pooled"``) / tokens
    ============  ===============================  ======================================================
    12 (S2)       ``optical``: ``blocks``          ``optical_GAP`` / ``optical_encodings``
    2 (S1)        ``radar``: ``radar.blocks``      ``SAR_GAP`` / ``SAR_encodings``
    14 (S2, S1)   ``joint``: all three encoders    ``joint_GAP`` / ``joint_encodings``
    ============  ===============================  ======================================================

    Keys: the optical encoder is the model's main stack (``patch_embed``, ``blocks.{i}``, ``norm``, ``gap_ffn``),
    the radar encoder sits under ``radar.`` with the same names, the joint encoder under ``joint.`` (``blocks.{i}``
    with a cross-attention sublayer, ``norm``). :meth:`plan` and :meth:`flops` take ``modality`` (default
    ``"optical"``) and cover every block that modality runs, in run order (joint: optical, radar, joint blocks).
    Other image sizes (multiples of 8) rebuild the ALiBi bias, as the official code does.
    """

    num_prefix_tokens = 0
    any_band_count = True  # 12, 2 or 14 bands: checked in modality_of

    def __init__(self, cfg: ModelCfg) -> None:
        arch: CROMAArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        d, area, hidden = arch.dim, arch.patch_size**2, int(arch.dim * arch.mlp_ratio)
        self.patch_embed = linear_params(d, len(OPTICAL_BANDS) * area, bias=True)
        self.gap_ffn = _gap_ffn(d, hidden)
        self.radar = nn.Module()
        self.radar.patch_embed = linear_params(d, len(RADAR_BANDS) * area, bias=True)
        self.radar.blocks = nn.ModuleList(Block(arch.block_spec()) for _ in range(arch.depth // 2))
        self.radar.norm = norm_params(d)
        self.radar.gap_ffn = _gap_ffn(d, hidden)
        self.joint = nn.Module()
        self.joint.blocks = nn.ModuleList(Block(arch.block_spec(cross_attn=True)) for _ in range(arch.depth // 2))
        self.joint.norm = norm_params(d)

    # -- which encoders run ----------------------------------------------------------------------------------
    def modality_of(self, x: torch.Tensor) -> str:
        """``"optical"``, ``"radar"`` or ``"joint"`` from the band count of ``x`` ``[B, C, H, W]``."""
        modality = {len(OPTICAL_BANDS): "optical", len(RADAR_BANDS): "radar",
                    len(OPTICAL_BANDS) + len(RADAR_BANDS): "joint"}.get(x.shape[1])
        if modality is None:
            raise ValueError(
                f"{self.cfg.name}: x has {x.shape[1]} bands (shape {tuple(x.shape)}); CROMA takes 12 optical bands "
                f"({', '.join(OPTICAL_BANDS)}), 2 radar bands ({', '.join(RADAR_BANDS)}) or 14 for the joint "
                "encoder (the 12 optical bands, then the 2 radar bands)")
        return modality

    def input_band_names(self, x: torch.Tensor) -> tuple[str, ...]:
        by_count = {len(OPTICAL_BANDS): OPTICAL_BANDS, len(RADAR_BANDS): RADAR_BANDS}
        return by_count.get(x.shape[1]) or super().input_band_names(x)

    def stack(self, modality: str = "optical") -> list[Block]:
        """The blocks ``modality`` runs, in run order."""
        _check_modality(modality)
        if modality == "optical":
            return list(self.blocks)
        if modality == "radar":
            return list(self.radar.blocks)
        return [*self.blocks, *self.radar.blocks, *self.joint.blocks]

    def plan(self, width: float = 1.0, mode: str = "attn+ffn", modality: str = "optical") -> SlimPlan:
        """Per-block widths of every block ``modality`` runs (paper rule), in run order."""
        dims = tuple((b.spec.num_heads, b.spec.head_dim, b.spec.mlp_hidden) for b in self.stack(modality))
        return make_plan(width, mode, dims)

    def flops(self, width: float = 1.0, *, mode: str = "attn+ffn", image_size: int | tuple[int, int] | None = None,
              modality: str = "optical") -> int:
        """FLOPs of one image through ``modality``'s encoders at ``width``: stems, blocks (the joint cross-attention
        reads as many optical tokens as it has radar tokens) and, for optical and radar, the GAP-FFN head of the
        pooled output."""
        height, wide = self._image_size(image_size)
        tokens = self.num_tokens(height, wide)
        blocks = stack_flops(self.stack(modality), self.plan(width, mode, modality), tokens, self.dim)
        hidden = self.gap_ffn.fc1.weight.shape[0]
        head = 0 if modality == "joint" else 2 * 2 * self.dim * hidden
        return self.stem_flops(height, wide, modality) + blocks + head

    def relative_flops(self, width: float, *, mode: str = "attn+ffn",
                       image_size: int | tuple[int, int] | None = None, modality: str = "optical") -> float:
        """``flops(width) / flops(1.0)`` for ``modality``."""
        full = self.flops(1.0, mode=mode, image_size=image_size, modality=modality)
        return self.flops(width, mode=mode, image_size=image_size, modality=modality) / full

    # -- family hooks -------------------------------------------------------------------------------------------
    def stem_flops(self, height: int, width: int, modality: str = "optical") -> int:
        _check_modality(modality)
        bands = {"optical": len(OPTICAL_BANDS), "radar": len(RADAR_BANDS)}.get(modality, len(OPTICAL_BANDS)
                                                                                 + len(RADAR_BANDS))
        return patch_embed_flops(self.num_tokens(height, width), bands, self.cfg.arch.patch_size, self.dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, N, d]`` of an optical (12-band) or radar (2-band) image (the joint encoder embeds
        both parts of a 14-band input separately)."""
        modality = self.modality_of(x)
        if modality == "joint":
            raise ValueError(f"{self.cfg.name}: embed takes one modality; embed x[:, :12] (optical) and x[:, 12:] "
                             "(radar) separately")
        layer = self.patch_embed if modality == "optical" else self.radar.patch_embed
        # the official linear layer over (c i j)-flattened patches
        return patch_embed(x, layer.weight, layer.bias, self.cfg.arch.patch_size)[0]

    def attention_bias(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        p = self.cfg.arch.patch_size
        # while tracing, the cache would keep a fake tensor for later eager calls: build it in the graph instead
        build = alibi_2d.__wrapped__ if torch.compiler.is_compiling() else alibi_2d
        return build(self.cfg.arch.num_heads, height // p, width // p, self.device, dtype)

    def encode(self, x: torch.Tensor, width: float, mode: str, output: str, blocks: Backend, **inputs
               ) -> torch.Tensor:
        modality = self.modality_of(x)
        plan = self.plan(width, mode, modality)
        bias = self.attention_bias(x.shape[-2], x.shape[-1], x.dtype)
        eps = self.norm_eps

        def encoder(images: torch.Tensor, stack: nn.ModuleList, norm: nn.Module, start: int) -> torch.Tensor:
            sub_plan = SlimPlan(plan.mode, plan.blocks[start:start + len(stack)])
            tokens = blocks.forward_blocks(self.embed(images), list(stack), sub_plan, bias=bias)
            return blocks.layer_norm(tokens, norm, eps)

        if modality == "optical":
            tokens, head = encoder(x, self.blocks, self.norm, 0), self.gap_ffn
        elif modality == "radar":
            tokens, head = encoder(x, self.radar.blocks, self.radar.norm, 0), self.radar.gap_ffn
        else:
            n_optical, n_radar = len(self.blocks), len(self.radar.blocks)
            optical = encoder(x[:, : len(OPTICAL_BANDS)], self.blocks, self.norm, 0)
            radar = encoder(x[:, len(OPTICAL_BANDS):], self.radar.blocks, self.radar.norm, n_optical)
            joint_plan = SlimPlan(plan.mode, plan.blocks[n_optical + n_radar:])
            tokens = blocks.forward_blocks(radar, list(self.joint.blocks), joint_plan, bias=bias, context=optical,
                                           context_bias=bias)
            tokens = blocks.layer_norm(tokens, self.joint.norm, eps)
            return tokens.mean(dim=1) if output == "pooled" else tokens
        if output == "tokens":
            return tokens
        dtype = x.dtype
        pooled = blocks.layer_norm(tokens.mean(dim=1), head.norm, eps)
        pooled = F.gelu(F.linear(pooled, head.fc1.weight.to(dtype), head.fc1.bias.to(dtype)))
        return F.linear(pooled, head.fc2.weight.to(dtype), head.fc2.bias.to(dtype))

    def normalize(self, x: torch.Tensor, eight_bit: bool = True) -> torch.Tensor:
        """CROMA's README preprocessing, from the statistics of ``x`` itself (there are no fixed constants).

        Per band, over the whole batch ``[B, C, H, W]`` (pass a large, representative batch): ``low, high = mean
        -+ 2 std`` (unbiased std), ``v = (x - low) / (high - low)`` clipped to ``[0, 1]``; with ``eight_bit`` (the
        README's default) quantised as ``uint8(clip(255 v, 0, 255)) / 255``. Works on the optical and radar bands
        alike (14 bands = both at once). Computed in float64; returns ``x.dtype`` (float32 for integer input).
        """
        self.check_tensor(x, check_dtype=False)
        self.modality_of(x)
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{self.cfg.name}: normalize expects real band values (any consistent units per "
                            f"band), got {x.dtype}")
        v = x.double()
        mean = v.mean(dim=(0, 2, 3), keepdim=True)
        std = v.std(dim=(0, 2, 3), keepdim=True)
        flat = (std == 0).flatten().nonzero().flatten().tolist()
        if flat:
            raise ValueError(f"{self.cfg.name}: bands {flat} are constant in this batch; CROMA's normalisation "
                             "scales each band by its spread in the data (normalize a larger batch)")
        v = (v - (mean - 2 * std)) / (4 * std)
        v = (v * 255.0).clamp(0, 255).floor() / 255.0 if eight_bit else v.clamp(0, 1)
        return v.to(x.dtype if x.is_floating_point() else torch.float32)

    # -- weights -----------------------------------------------------------------------------------------------
    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official keys (the sub-state-dicts merged as ``s2_encoder.transformer.layers.0.0.to_qkv.
        weight``, ...) -> this model's keys (``blocks.0.attn.qkv.weight``, ...); keys already in this model's names
        pass unchanged."""
        out = {}
        for key, value in state.items():
            for pattern, new in _RENAMES:
                match = pattern.match(key)
                if match:
                    key = match.expand(new) + key[match.end():]
                    break
            out[key] = value
        return out

    @torch.no_grad()
    def init_random(self, generator: torch.Generator) -> None:
        super().init_random(generator)
        for block in (*self.radar.blocks, *self.joint.blocks):
            block.init_random(generator)
        for norm in (self.radar.norm, self.joint.norm):
            norm.weight.copy_(1 + 0.1 * torch.randn(self.dim, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(self.dim, generator=generator))

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        for layer in (self.patch_embed, self.radar.patch_embed):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * layer.weight.shape[1] ** -0.5)
            layer.bias.copy_(0.02 * torch.randn(layer.bias.shape, generator=generator))
        for head in (self.gap_ffn, self.radar.gap_ffn):
            head.norm.weight.copy_(1 + 0.1 * torch.randn(self.dim, generator=generator))
            head.norm.bias.copy_(0.1 * torch.randn(self.dim, generator=generator))
            for fc in (head.fc1, head.fc2):
                fc.weight.copy_(torch.randn(fc.weight.shape, generator=generator) * fc.weight.shape[1] ** -0.5)
                fc.bias.copy_(0.02 * torch.randn(fc.bias.shape, generator=generator))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, radar_depth={len(self.radar.blocks)}, "
                f"joint_depth={len(self.joint.blocks)}")


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown CROMA modality {modality!r}; expected one of {', '.join(map(repr, MODALITIES))}")


_PAPER = Source("paper", "Fuller, Millard, Green, CROMA, NeurIPS 2023 (arXiv:2311.00566)")
_README = Source("readme", "https://github.com/antofuller/CROMA README (12 optical bands without B10, 2 radar bands; "
                           "per-band rescale from the data's own mean +- 2 std)")
_SPEC = InputSpec(
    sensor="Sentinel-2 L1C (12 bands, no cirrus B10) and Sentinel-1 GRD (SSL4EO-S12)",
    bands=OPTICAL_BANDS + RADAR_BANDS, band_sets=(OPTICAL_BANDS + RADAR_BANDS, OPTICAL_BANDS, RADAR_BANDS),
    wavelengths=merged("esa", ESA_S2, SAR_NONE), unit="any", quantification=10000.0, scale=1.0, offset=0.0,
    normalization="batch_rescale", mean=None, std=None, image_size=120, patch_size=8, gsd_m=10.0, frames=1,
    pretraining_data="SSL4EO-S12 (Sentinel-1 GRD + Sentinel-2)",
    sources=cite(sensor=_README, units=_README, normalization=_README,
                 bands=Source("code", "antofuller/CROMA@59505a6b use_croma.py (band order not stated; the SSL4EO-S12 "
                                      "order without B10 is assumed: an open question)"),
                 image_size=_PAPER, patch_size=Source("code", "antofuller/CROMA@59505a6b use_croma.py (patch 8)"),
                 gsd_m=_PAPER, frames=_PAPER, pretraining_data=_PAPER),
)
_POOLED = ("optical (12 bands) / radar (2 bands): GAP_FFN of the mean of the encoder's normed tokens (official "
           "optical_GAP / SAR_GAP); joint (14 bands): mean of the joint encoder's normed tokens (joint_GAP)")


def _register(size: str, dim: int, depth: int) -> None:
    register_model(ModelCfg(
        name=f"croma_{size}",
        family="croma",
        model_cls=CROMA,
        arch=CROMAArch(img_size=120, patch_size=8, dim=dim, depth=depth, num_heads=16, mlp_ratio=4.0,
                       norm_eps=1e-5),
        description=f"CROMA-{size} optical (Sentinel-2, {depth} layers), radar (Sentinel-1, {depth // 2}) and joint "
                    f"radar-optical ({depth // 2}, cross-attention) encoders, 2-D ALiBi, 120 px, patch 8",
        spec=_SPEC,
        pooled=_POOLED,
        checkpoint=CheckpointFormat(strip_prefixes=(), sub_state_dicts=SUB_STATE_DICTS),
        weights_url=f"https://huggingface.co/antofuller/CROMA/resolve/main/CROMA_{size}.pt",
        license="MIT (official code, antofuller/CROMA); the weights' license is not stated",
        paper="Fuller, Millard, Green, CROMA: Remote Sensing Representations with Contrastive Radar-Optical Masked "
              "Autoencoders, NeurIPS 2023",
    ))


_register("base", 768, 12)
_register("large", 1024, 24)
