"""``SlimModel``: one loaded encoder that runs at any width from its single stored copy of weights.

A model family subclasses :class:`SlimModel` and supplies the stem (``embed``: patch embedding,
position and class tokens, never slimmed), its FLOPs, random initialisation and pooling, and
optionally an additive attention bias (``attention_bias``). The transformer blocks, the final norm,
the public API and the input checks live here. A family with several encoders (CROMA) overrides
``encode``, which both the fast path and the reference path run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backends import Backend, select_backend
from .blocks import Block, BlockSpec, norm_params
from .flops import stack_flops
from .plan import SlimPlan, check_mode, check_width, make_plan
from .registry import ModelCfg
from .spec import InputSpec

OUTPUTS = ("pooled", "tokens")


@dataclass(frozen=True)
class ValidationReport:
    """Fast path vs float64 reference at one width (see :meth:`SlimModel.validate`)."""

    width: float
    mode: str
    backend: str
    dtype: torch.dtype
    max_abs_error: float
    rel_error: float  # ||fast - ref|| / ||ref|| over the whole output
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (f"width={self.width:g} mode={self.mode} backend={self.backend} dtype={self.dtype}: "
                f"max abs err {self.max_abs_error:.3g}, rel err {self.rel_error:.3g} "
                f"(tolerance {self.tolerance:g}) {verdict}")


class SlimModel(nn.Module):
    """A slimmable encoder. Build it with :func:`slimkern.load`.

    >>> model = slimkern.load("satmae")                       # doctest: +SKIP
    >>> emb = model.run(model.normalize(images), width=0.1)   # [B, 1024], ~11 % of the FLOPs
    """

    #: Tokens before the patch tokens (class token, registers).
    num_prefix_tokens: int = 1
    #: Names of model-specific keyword inputs of :meth:`run` (wavelengths, GSD, time, ...).
    extra_inputs: tuple[str, ...] = ()
    #: Accepted ranks of ``x``: 4 = ``[B, C, H, W]``; multi-temporal models add 5 = ``[B, C, T, H, W]``.
    input_ranks: tuple[int, ...] = (4,)
    #: True for models whose band set is an input (e.g. wavelength-conditioned stems): ``embed``
    #: then checks the band count against the other inputs instead of ``cfg.bands``.
    any_band_count: bool = False

    def __init__(self, cfg: ModelCfg, block_specs: list[BlockSpec], dim: int, norm_eps: float,
                 final_norm: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        self.norm_eps = norm_eps
        self.blocks = nn.ModuleList(Block(spec) for spec in block_specs)
        self.norm = norm_params(dim) if final_norm else None
        self._block_dims = tuple((s.num_heads, s.head_dim, s.mlp_hidden) for s in block_specs)
        self.backend_name = "auto"

    # -- what a family provides -------------------------------------------------------------------
    def embed(self, x: torch.Tensor, **inputs) -> torch.Tensor:
        """Stem: images ``[B, C, H, W]`` -> tokens ``[B, N, d]``, computed in ``x.dtype``."""
        raise NotImplementedError

    def num_tokens(self, height: int, width: int) -> int:
        """Sequence length ``N`` for an image of ``height x width`` pixels (default: prefix tokens plus one
        token per ``cfg.arch.patch_size`` patch)."""
        p = self.cfg.arch.patch_size
        return self.num_prefix_tokens + (height // p) * (width // p)

    def stem_flops(self, height: int, width: int) -> int:
        """FLOPs of the (unslimmed) stem for one image."""
        raise NotImplementedError

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if the stem cannot take an image of this size (default: both sides a positive
        multiple of ``cfg.arch.patch_size``)."""
        p = self.cfg.arch.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"{self.cfg.name}: image size {height}x{width} is not a positive multiple of the "
                             f"patch size {p} (default input {self.cfg.arch.img_size}x{self.cfg.arch.img_size})")

    def attention_bias(self, height: int, width: int, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive attention-logit bias ``[H, N, N]`` of every self-attention for an image of ``height x width``
        pixels, on the model's device in ``dtype`` (the tokens' dtype); ``None`` (the default) for no bias.

        It is added per head before the softmax and is the same at every width (all heads are kept).
        """
        return None

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own pooled embedding from final-normed tokens (default: the class token)."""
        return tokens[:, 0]

    def init_stem_random(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    def spectral_inputs(self, bands: tuple[str, ...]) -> dict:
        """The :meth:`run` inputs that describe canonical ``bands`` (wavelength-conditioned families: their
        wavelengths from the spec's table); ``{}`` for models with a fixed band set."""
        return {}

    def input_wavelengths_um(self, inputs: dict) -> tuple[float, ...]:
        """The optical wavelengths (micrometres) given in :meth:`run`'s ``inputs``, for the input check."""
        return ()

    def input_band_names(self, x: torch.Tensor) -> tuple[str, ...]:
        """Names of the bands of ``x`` for messages: the spec's bands when they fit, else ``band 0, band 1, ...``."""
        bands = self.spec.bands
        return bands if x.shape[1] == len(bands) else tuple(f"band {i}" for i in range(x.shape[1]))

    def convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official encoder keys (container unwrapped, prefixes stripped) -> this model's keys.

        Identity for timm-named checkpoints; families with other names or packings override it.
        """
        return state

    # -- construction helpers ------------------------------------------------------------------
    @torch.no_grad()
    def init_random(self, generator: torch.Generator) -> None:
        """Deterministic random weights for every parameter (a model without a checkpoint)."""
        for block in self.blocks:
            block.init_random(generator)
        if self.norm is not None:
            self.norm.weight.copy_(1 + 0.1 * torch.randn(self.dim, generator=generator))
            self.norm.bias.copy_(0.1 * torch.randn(self.dim, generator=generator))
        self.init_stem_random(generator)

    @property
    def device(self) -> torch.device:
        return self.blocks[0].norm1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].norm1.weight.dtype

    @property
    def spec(self) -> InputSpec:
        """The checkpoint's input contract: bands, units, normalisation, sizes, each fact with its source."""
        return self.cfg.spec

    @property
    def backend(self) -> Backend:
        """The backend that runs the blocks for the model's current device and dtype."""
        return select_backend(self.backend_name, self.device, self.dtype)

    # -- the public API --------------------------------------------------------------------------
    def plan(self, width: float = 1.0, mode: str = "attn+ffn") -> SlimPlan:
        """Per-block ``d_k'`` and ``d_h'`` at ``width`` (paper rule ``max(1, int(width * d))``)."""
        return make_plan(width, mode, self._block_dims)

    def run(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
            **inputs) -> torch.Tensor:
        """Embed normalised images ``x`` ``[B, C, H, W]`` with every block slimmed to ``width``.

        Args:
            x: normalised input (see :meth:`normalize`), on the model's device, in its dtype.
            width: slimming factor ``s`` in (0, 1]; 1.0 is the unslimmed model.
            mode: ``"attn+ffn"`` (both), ``"attn"`` (attention only) or ``"ffn"`` (FFN only).
            output: ``"pooled"`` -> ``[B, d]`` (the model's classification embedding) or
                ``"tokens"`` -> ``[B, N, d]`` (final-normed sequence, prefix tokens included).
            **inputs: model-specific inputs (none for plain ViTs).
        """
        check_width(width)
        check_mode(mode)
        self._check_call(x, output, inputs)
        backend = self.backend
        with torch.no_grad():
            return self.encode(x, width, mode, output, backend, **inputs)

    forward = run

    def reference(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
                  dtype: torch.dtype = torch.float64, **inputs) -> torch.Tensor:
        """The plain PyTorch reference path (materialised slices, explicit attention), in ``dtype``."""
        from .reference import REFERENCE

        check_width(width)
        check_mode(mode)
        self._check_call(x, output, inputs)
        with torch.no_grad():
            return self.encode(x.to(dtype), width, mode, output, REFERENCE, **inputs)

    def encode(self, x: torch.Tensor, width: float, mode: str, output: str, blocks: Backend, **inputs
               ) -> torch.Tensor:
        """The forward pass after the input checks, computed in ``x.dtype``: stem, blocks, final norm, pooling.

        ``blocks`` runs the transformer blocks and norms: the model's backend (:meth:`run`) or the reference
        path (:meth:`reference`). Families with several encoders override this method.
        """
        bias = self.attention_bias(x.shape[-2], x.shape[-1], x.dtype)
        return self._encode_stem(self.embed(x, **inputs), self.plan(width, mode), bias, output, blocks)

    def _encode_stem(self, stem: torch.Tensor, plan: SlimPlan, bias: torch.Tensor | None, output: str,
                     blocks: Backend) -> torch.Tensor:
        """Blocks, final norm and pooling from the stem's tokens (shared by :meth:`encode` and :meth:`run_widths`)."""
        tokens = blocks.forward_blocks(stem, list(self.blocks), plan, bias=bias)
        if self.norm is not None:
            tokens = blocks.layer_norm(tokens, self.norm, self.norm_eps)
        return self.pool(tokens) if output == "pooled" else tokens

    def run_widths(self, x: torch.Tensor, widths, *, mode: str = "attn+ffn", output: str = "pooled",
                   **inputs) -> dict[float, torch.Tensor]:
        """:meth:`run` at every width of ``widths``, with the unslimmed stem computed once.

        The stem (patch embedding, positions, class token) is the same at every width, so a width sweep
        embeds ``x`` once and runs only the blocks, the final norm and the pooling per width. Returns
        ``{float(width): output}`` in the order of ``widths``, each equal to ``run(x, width, ...)``. Families
        that override :meth:`encode` (several encoders, e.g. CROMA) fall back to one :meth:`run` per width.
        """
        widths = [check_width(w) for w in widths]
        check_mode(mode)
        self._check_call(x, output, inputs)
        if type(self).encode is not SlimModel.encode:
            return {w: self.run(x, w, mode=mode, output=output, **inputs) for w in widths}
        backend = self.backend
        with torch.no_grad():
            stem = self.embed(x, **inputs)
            bias = self.attention_bias(x.shape[-2], x.shape[-1], x.dtype)
            return {w: self._encode_stem(stem, self.plan(w, mode), bias, output, backend) for w in widths}

    def validate(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
                 **inputs) -> ValidationReport:
        """Run the fast path and the float64 reference on ``x`` and report their difference."""
        fast = self.run(x, width, mode=mode, output=output, **inputs).double()
        ref = self.reference(x, width, mode=mode, output=output, **inputs)
        diff = fast - ref
        backend = self.backend
        return ValidationReport(
            width=float(width), mode=mode, backend=backend.name, dtype=self.dtype,
            max_abs_error=diff.abs().max().item(),
            rel_error=(diff.norm() / ref.norm()).item(),
            tolerance=backend.tolerances[self.dtype],
        )

    def flops(self, width: float = 1.0, *, mode: str = "attn+ffn", image_size: int | tuple[int, int] | None = None
              ) -> int:
        """FLOPs (2 x multiply-add, matmuls) of one image at ``width``, stem included.

        A cross-attention block is counted with a context as long as the sequence (families override this
        where it differs).
        """
        height, wide = self._image_size(image_size)
        tokens = self.num_tokens(height, wide)
        return self.stem_flops(height, wide) + stack_flops(self.blocks, self.plan(width, mode), tokens, self.dim)

    def relative_flops(self, width: float, *, mode: str = "attn+ffn",
                       image_size: int | tuple[int, int] | None = None) -> float:
        """``flops(width) / flops(1.0)``: the paper's relative compute."""
        return self.flops(width, mode=mode, image_size=image_size) / self.flops(1.0, mode=mode, image_size=image_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per band, with the spec's statistics (identity where they come from the data).

        ``x`` must be in model units (the spec's ``(DN + offset) * scale``, e.g. 8-bit RGB divided by 255).
        """
        self._check_tensor(x, check_dtype=False)
        if not x.is_floating_point():
            raise TypeError(f"normalize expects a floating-point tensor in model units ((DN + {self.spec.offset:g}) "
                            f"* {self.spec.scale:g}), got {x.dtype}")
        if x.shape[1] != len(self.cfg.mean):
            raise ValueError(f"{self.cfg.name}: normalize has statistics for {len(self.cfg.mean)} bands "
                             f"({', '.join(self.cfg.bands)}), x has {x.shape[1]}; normalise other band sets yourself")
        shape = (1, -1) + (1,) * (x.dim() - 2)  # bands on dim 1, for [B, C, H, W] and [B, C, T, H, W]
        mean = torch.tensor(self.cfg.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.cfg.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    # -- input checks ----------------------------------------------------------------------------
    def _image_size(self, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
        if image_size is None:
            image_size = self.cfg.arch.img_size
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.check_image_size(height, width)
        return height, width

    def _check_tensor(self, x: torch.Tensor, check_dtype: bool = True) -> None:
        name = self.cfg.name
        layouts = " or ".join({4: "[B, C, H, W]", 5: "[B, C, T, H, W]"}[r] for r in self.input_ranks)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: x must be a torch.Tensor {layouts}, got {type(x).__name__}")
        if x.dim() not in self.input_ranks:
            raise ValueError(f"{name}: x must be {layouts}, got shape {tuple(x.shape)}")
        bands = self.cfg.bands
        if not self.any_band_count and x.shape[1] != len(bands):
            raise ValueError(f"{name}: x has {x.shape[1]} bands (shape {tuple(x.shape)}), expected {len(bands)} "
                             f"in this order: {', '.join(bands)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: x is an empty batch (shape {tuple(x.shape)})")
        if check_dtype and x.dtype != self.dtype:
            raise TypeError(f"{name}: x is {x.dtype} but the model runs in {self.dtype}; "
                            f"convert with x.to({self.dtype}) (or load the model with dtype={x.dtype})")
        if x.device != self.device:
            raise ValueError(f"{name}: x is on {x.device} but the model is on {self.device}; use x.to('{self.device}')")

    def _check_call(self, x: torch.Tensor, output: str, inputs: dict) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; expected one of {', '.join(map(repr, OUTPUTS))}")
        unknown = sorted(set(inputs) - set(self.extra_inputs))
        if unknown:
            takes = f"takes {', '.join(self.extra_inputs)}" if self.extra_inputs else "takes no extra inputs"
            raise TypeError(f"{self.cfg.name} {takes}; got unexpected {', '.join(unknown)}")
        self._check_tensor(x)
        self.check_image_size(x.shape[-2], x.shape[-1])
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{self.cfg.name}: x contains {bad} NaN or Inf values; clean or mask the input first")

    def extra_repr(self) -> str:
        spec = self.blocks[0].spec
        return (f"name={self.cfg.name}, depth={len(self.blocks)}, dim={self.dim}, heads={spec.num_heads}, "
                f"head_dim={spec.head_dim}, mlp_hidden={spec.mlp_hidden}, backend={self.backend_name}")

