"""TerraMind v1 (Jakubik et al., ICCV 2025): the encoder of IBM/ESA's any-to-any 4M-style model, for the
raw Sentinel-2 L2A modality (``untok_sen2l2a@224``) alone.

Facts from the official code, TerraTorch ``terratorch/models/backbones/terramind/`` (MODELS.md section 10/11 and
appendix): ``model/terramind_register.py`` (``terramind_v1_base``/``_large``: D 768/1024, depth 12/24, heads
12/16, ``mlp_ratio=4``, ``qkv_bias=proj_bias=mlp_bias=False``, ``LayerNorm(eps=1e-6, bias=False)``, SiLU gated
MLP; band list ``PRETRAINED_BANDS`` and statistics ``v1_pretraining_mean/std``; the HF files
``TerraMind_v1_{base,large}.pt``, a flat state dict of the whole 4M model), ``model/terramind_vit.py``
(``TerraMindViT``: embeddings, blocks ``encoder.{i}``, final ``encoder_norm``, per-block outputs, no class or
register token), ``model/encoder_embeddings.py`` (``ImageEncoderEmbedding``), ``model/tm_utils.py``
(``Block``, ``Attention``, ``GatedMlp``, ``LayerNorm``, ``build_2d_sincos_posemb``, ``interpolate_pos_encoding``),
``model/terramind.py`` (the full model's other keys) and ``heads/classification_head.py`` (pooling).

- Patch embedding: ``Linear(12*16*16, D, bias=False)`` over patches flattened as ``(ph pw c)``, i.e. the
  channel index varies fastest (einops ``'b c (nh ph) (nw pw) -> b (nh nw) (ph pw c)'``); tokens row-major.
- ``tokens + (pos_emb + mod_emb)``: a fixed 2-D sin-cos table (a persistent buffer, so it is in the file)
  and a learned ``[1, 1, D]`` modality embedding. ``build_2d_sincos_posemb`` is MoCo-v3's: for the patch at
  row r, column c, ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with ``w_i = 10000^(-i/(D/4))`` (ROW first,
  unlike MAE). Other image sizes resample the stored table bicubically (``align_corners=False``, no
  antialias).
- Blocks: pre-norm, fused bias-free qkv (rows ``[q; k; v]``, heads contiguous), softmax attention scaled by
  ``hd^-0.5``, bias-free out-projection, ``GatedMlp``: ``fc2(silu(fc1(x)) * fc3(x))`` with hidden
  ``int(2 * int(D * 4) / 3)`` (2048 for base, 2730 for large). LayerNorm ``bias`` entries are zero buffers.
- Output: TerraTorch's backbone returns the per-block token sequences ``[B, N, D]``, the last one after
  ``encoder_norm`` (``merge_method='mean'`` averages over image modalities: a no-op for one modality); its
  ``ClassificationHead`` averages tokens. The pooled embedding here is the mean over all tokens after the
  final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bands import ESA_S2, S2_L2A_BANDS
from ..blocks import BlockSpec
from ..flops import patch_embed_flops
from ..model import SlimModel
from ..registry import CheckpointFormat, ModelCfg, register_model
from ..spec import InputSpec, Source, cite
from .pos_embed import sincos_2d

#: TerraMind's key for the raw (untokenised) Sentinel-2 L2A modality.
S2L2A = "untok_sen2l2a@224"
_EMBED = f"encoder_embeddings.{S2L2A}."


@dataclass(frozen=True)
class TerraMindArch:
    """Architecture of a TerraMind v1 encoder with one image modality; ``load(name, **overrides)`` may replace
    any field."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 12
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.dim % 4:
            raise ValueError(f"dim {self.dim} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        # tm_utils.Block passes int(dim * mlp_ratio); GatedMlp keeps 2/3 of it for its two input projections
        return int(2 * int(self.dim * self.mlp_ratio) / 3)

    def block_spec(self) -> BlockSpec:
        return BlockSpec(dim=self.dim, num_heads=self.num_heads, head_dim=self.dim // self.num_heads,
                         mlp_hidden=self.mlp_hidden, qkv_bias=False, proj_bias=False, mlp_bias=False,
                         norm_eps=self.norm_eps, ffn="swiglu")


def sincos_2d_rows_first(dim: int, grid: int) -> torch.Tensor:
    """``[grid * grid, dim]`` float64 table of 4M's ``build_2d_sincos_posemb`` for a square grid of row-major
    patches: ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` (MAE's column-first halves, swapped)."""
    table = sincos_2d(dim, grid, grid)
    half = dim // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=1)


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device="meta"), requires_grad=False)


class TerraMind(SlimModel):
    """TerraMind v1 encoder on Sentinel-2 L2A (12 bands): linear patch embedding, fixed row-first sin-cos
    position embedding plus a modality embedding, no class token, bias-free SwiGLU blocks, final norm.

    Stem keys keep their official names (``encoder_embeddings.untok_sen2l2a@224.{proj.weight, pos_emb,
    mod_emb}``); ``convert_checkpoint`` renames ``encoder.{i}`` -> ``blocks.{i}`` and ``encoder_norm`` ->
    ``norm``. ``run(..., output="pooled")`` is the token mean; ``output="tokens"`` is TerraTorch's last
    backbone output.
    """

    num_prefix_tokens = 0

    def __init__(self, cfg: ModelCfg) -> None:
        arch: TerraMindArch = cfg.arch
        super().__init__(cfg, [arch.block_spec()] * arch.depth, arch.dim, arch.norm_eps)
        if arch.in_chans != len(cfg.bands):
            raise ValueError(f"{cfg.name}: in_chans={arch.in_chans} but the cfg lists {len(cfg.bands)} bands")
        embedding = nn.Module()
        embedding.proj = nn.Module()
        embedding.proj.weight = _param(arch.dim, arch.in_chans * arch.patch_size**2)  # columns ordered (ph, pw, c)
        embedding.pos_emb = _param(1, arch.grid**2, arch.dim)
        embedding.mod_emb = _param(1, 1, arch.dim)
        self.encoder_embeddings = nn.ModuleDict({S2L2A: embedding})

    def stem_flops(self, height: int, width: int) -> int:
        arch = self.cfg.arch
        return patch_embed_flops(self.num_tokens(height, width), arch.in_chans, arch.patch_size, arch.dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        arch, dtype, dim = self.cfg.arch, x.dtype, self.dim
        p, channels = arch.patch_size, arch.in_chans
        embedding = self.encoder_embeddings[S2L2A]
        # the linear layer over (ph, pw, c)-flattened patches is a stride-p conv with this [D, C, p, p] kernel
        kernel = embedding.proj.weight.to(dtype).view(dim, p, p, channels).permute(0, 3, 1, 2)
        tokens = F.conv2d(x, kernel, stride=p)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # row-major patches: token = r * W + c
        pos = embedding.pos_emb.to(dtype)
        if grid != (arch.grid, arch.grid):  # interpolate_pos_encoding: bicubic resample of the stored table
            table = pos.reshape(1, arch.grid, arch.grid, dim).permute(0, 3, 1, 2)
            table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
            pos = table.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return tokens + (pos + embedding.mod_emb.to(dtype))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean over all tokens (there is no class token), as TerraTorch's ``ClassificationHead``."""
        return tokens.mean(dim=1)

    @torch.no_grad()
    def init_stem_random(self, generator: torch.Generator) -> None:
        embedding = self.encoder_embeddings[S2L2A]
        weight = embedding.proj.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * weight.shape[1] ** -0.5)
        embedding.pos_emb.copy_(sincos_2d_rows_first(self.dim, self.cfg.arch.grid)[None])  # fixed, as officially
        embedding.mod_emb.copy_(0.1 * torch.randn(embedding.mod_emb.shape, generator=generator))

    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The encoder part of a full TerraMind state dict, under this model's keys.

        Keeps ``encoder.{i}.*`` (-> ``blocks.{i}.*``), ``encoder_norm.*`` (-> ``norm.*``) and the S2L2A
        embedding ``encoder_embeddings.untok_sen2l2a@224.*``; drops every OTHER modality's encoder embedding
        (``encoder_embeddings.{untok_sen2l1c, untok_sen2rgb, untok_sen1grd, untok_sen1rtc, untok_dem,
        tok_*}@224``, ``coords``, ``caption``, ...). The decoder side is dropped by ``cfg.checkpoint``. Any
        other key is kept, so the load reports it as unexpected.

        Like TerraTorch's ``checkpoint_filter_fn``, which falls back to the model's own buffers, the
        architecture-fixed buffers are filled in when the file lacks them: the sin-cos ``pos_emb`` (also when
        the stored one is for another ``img_size``, which TerraTorch skips for its recomputed table) and the
        zero LayerNorm biases.
        """
        converted = {}
        for key, value in state.items():
            if key.startswith("encoder_embeddings.") and not key.startswith(_EMBED):
                continue
            if key.startswith("encoder."):
                key = "blocks." + key.removeprefix("encoder.")
            elif key.startswith("encoder_norm."):
                key = "norm." + key.removeprefix("encoder_norm.")
            converted[key] = value
        arch = self.cfg.arch
        pos_key = _EMBED + "pos_emb"
        if pos_key not in converted or converted[pos_key].shape != (1, arch.grid**2, arch.dim):
            converted[pos_key] = sincos_2d_rows_first(arch.dim, arch.grid)[None].float()
        for key, param in self.named_parameters():
            if key.endswith(("norm1.bias", "norm2.bias")) or key == "norm.bias":
                converted.setdefault(key, torch.zeros(param.shape))
        return converted


# terramind_register.py v1_pretraining_mean/std['untok_sen2l2a@224']
_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988, 2424.884,
         1857.648)
_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379, 1434.261,
        1334.311)
# Statistics of offset-free DN: TerraTorch's data_constants.py lists the same std with every mean + 1000, for data
# that keeps the +1000 offset of processing baseline >= 04.00 (prepare(..., add_offset=-1000) removes it).
_REGISTER = Source("code", "IBM/terratorch@85467a9f terratorch/models/backbones/terramind/model/terramind_register.py "
                           "(PRETRAINED_BANDS, v1_pretraining_mean/std['untok_sen2l2a@224'], 224 px, patch 16)")
_PAPER = Source("paper", "Jakubik et al., TerraMind, ICCV 2025 (arXiv:2504.11171): TerraMesh, 10 m")
_SPEC = InputSpec(
    sensor="Sentinel-2 L2A", bands=S2_L2A_BANDS, wavelengths=ESA_S2, unit="DN", quantification=10000.0, scale=1.0,
    offset=0.0, normalization="standardize", mean=_MEAN, std=_STD, image_size=224, patch_size=16, gsd_m=10.0,
    frames=1, pretraining_data="TerraMesh",
    sources=cite(sensor=_REGISTER, bands=_REGISTER, units=_REGISTER, normalization=_REGISTER, image_size=_REGISTER,
                 patch_size=_REGISTER, gsd_m=_PAPER, frames=_PAPER, pretraining_data=_PAPER),
)

_CHECKPOINT = CheckpointFormat(
    container_keys=(),  # the HF .pt file is the flat state dict of the whole 4M model
    strip_prefixes=("module.",),
    # the decoder half of the any-to-any model; other modalities' encoder embeddings go in convert_checkpoint
    drop_prefixes=("decoder_embeddings.", "decoder_proj_context.", "decoder.", "decoder_norm.", "mask_token",
                   "register_tokens"),
)


def _register(size: str, dim: int, depth: int, num_heads: int) -> None:
    register_model(ModelCfg(
        name=f"terramind_{size}",
        aliases=(f"terramind_v1_{size}",),
        family="terramind",
        model_cls=TerraMind,
        arch=TerraMindArch(img_size=224, patch_size=16, in_chans=12, dim=dim, depth=depth, num_heads=num_heads,
                           mlp_ratio=4.0, norm_eps=1e-6),
        description=f"TerraMind 1.0 {size} encoder (4M-style any-to-any pre-training on TerraMesh) with the raw "
                    "Sentinel-2 L2A patch embedding, 224 px, patch 16, bias-free SwiGLU blocks",
        spec=_SPEC,
        pooled="mean over all patch tokens after the final encoder norm (no class token; TerraTorch's "
               "ClassificationHead pooling of the backbone's last output)",
        checkpoint=_CHECKPOINT,
        weights_url=f"https://huggingface.co/ibm-esa-geospatial/TerraMind-1.0-{size}/resolve/main/"
                    f"TerraMind_v1_{size}.pt",
        license="Apache-2.0",
        paper="Jakubik et al., TerraMind: Large-Scale Generative Multimodality for Earth Observation, ICCV 2025 "
              "(arXiv 2504.11171)",
    ))


_register("base", 768, 12, 12)
_register("large", 1024, 24, 16)
