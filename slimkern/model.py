"""``SlimModel``: one loaded encoder that runs at any width from its single stored copy of weights.

A model family subclasses :class:`SlimModel` and supplies the stem (``embed``: patch embedding,
position and class tokens, never slimmed), its FLOPs, random initialisation and pooling, and
optionally an additive attention bias (``attention_bias``). The transformer blocks, the final norm,
the public API and the input checks live here. A family with several encoders (CROMA) overrides
``encode``, which both the fast path and the reference path run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from . import checks
from .backends import Backend, select_backend
from .blocks import Block, BlockSpec, norm_params
from .flops import stack_flops
from .plan import SlimPlan, check_mode, make_plan
from .registry import ModelCfg
from .spec import InputSpec


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

    >>> model = slimkern.load("satmae")                                           # doctest: +SKIP
    >>> p = model.prepare(pixels, bands=["R", "G", "B"], units="DN")             # doctest: +SKIP
    >>> emb = model.run(p.x, width=0.1, **p.inputs)   # [B, 1024], ~11 % of the FLOPs
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
        self._backend: tuple[tuple, Backend] | None = None  # ((name, device, dtype), the backend resolved for them)
        self._backend_name = "auto"
        self.checkpoint_sha256: str | None = None  # set by slimkern.load from the weights file
        self.checkpoint_name = "random weights"

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
    def backend_name(self) -> str:
        """The requested backend: ``"auto"`` or a backend's name; setting it resolves the backend."""
        return self._backend_name

    @backend_name.setter
    def backend_name(self, name: str) -> None:
        self._backend_name = name
        self._resolve_backend()

    @property
    def backend(self) -> Backend:
        """The backend that runs the blocks for the model's current device and dtype.

        Resolved when the model is loaded, moved or cast (``.to()``, ``.cuda()``, ``.half()``, ...) or its
        ``backend_name`` is set, not on every call; a model whose parameters changed device or dtype some other way
        (``load_state_dict(assign=True)``) is resolved again on its next call.
        """
        key = (self._backend_name, self.device, self.dtype)
        if self._backend is None or self._backend[0] != key:
            self._backend = (key, select_backend(*key))
            self._backend[1].prepare()
        return self._backend[1]

    def _resolve_backend(self) -> None:
        self._backend = None
        if self.device.type != "meta":  # an architecture without weights (build_meta, before loading) runs nothing
            self.backend  # noqa: B018  (raises now, with every backend's reason, if none can run the model)

    def _apply(self, fn, *args, **kwargs):
        # every move or cast (.to, .cuda, .half, .float, to_empty, ...) goes through here: resolve for the new place,
        # but leave a failure (no backend for this device/dtype) to the next call, as nn.Module moves never raise
        module = super()._apply(fn, *args, **kwargs)
        try:
            self._resolve_backend()
        except NotImplementedError:
            self._backend = None
        return module

    # -- the public API --------------------------------------------------------------------------
    def plan(self, width: float = 1.0, mode: str = "attn+ffn") -> SlimPlan:
        """Per-block ``d_k'`` and ``d_h'`` at ``width`` (paper rule ``max(1, int(width * d))``)."""
        return make_plan(width, mode, self._block_dims)

    def check_inputs(self, x: torch.Tensor, width: float | Iterable[float] | None = None, *, mode: str = "attn+ffn",
                     output: str = "pooled", check: str = "error", **inputs) -> float | list[float] | None:
        """Check one call's inputs, each fact once, before any computation; return the width(s) as floats.

        The checks (:mod:`slimkern.checks`), in order: width(s) in (0, 1] (a sequence for :meth:`run_widths`;
        ``None`` when a serving budget picks it later), mode, output, the model's own extra inputs, ``x`` a
        tensor of an accepted rank with the model's bands and at least one image, its dtype and device, its image
        size, finite values (the one check that reads every value), and the plausibility of the values against the
        input contract (``check``: ``"error"``, ``"warn"`` or ``"off"``; :mod:`slimkern.input_check`).
        :meth:`run`, :meth:`reference`, :meth:`validate`, :meth:`run_widths` and the serving engine and server call
        it exactly once per call.

        Raises:
            TypeError: wrong types, dtype or unexpected extra inputs. ValueError: anything else, with what is
            expected.
        """
        widths = checks.check_widths(width)
        check_mode(mode)
        checks.check_output(output)
        checks.check_extra_inputs(self, inputs)
        self.check_tensor(x)
        self.check_image_size(x.shape[-2], x.shape[-1])
        checks.check_finite(self.cfg.name, x)
        checks.check_plausible(self, x, inputs, check)
        return widths

    def check_tensor(self, x: torch.Tensor, *, check_dtype: bool = True) -> None:
        """``x`` a tensor of an accepted rank with the model's bands, at least one image, on the model's device and
        (unless ``check_dtype`` is false, as for :meth:`normalize`'s raw input) in its dtype."""
        checks.check_tensor(self, x)
        if check_dtype:
            checks.check_dtype(self, x)
        checks.check_device(self, x)

    def run(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
            check: str = "error", **inputs) -> torch.Tensor:
        """Embed normalised images ``x`` ``[B, C, H, W]`` with every block slimmed to ``width``.

        Args:
            x: normalised input (see :meth:`prepare`), on the model's device, in its dtype.
            width: slimming factor ``s`` in (0, 1]; 1.0 is the unslimmed model.
            mode: ``"attn+ffn"`` (both), ``"attn"`` (attention only) or ``"ffn"`` (FFN only).
            output: ``"pooled"`` -> ``[B, d]`` (the model's classification embedding) or
                ``"tokens"`` -> ``[B, N, d]`` (final-normed sequence, prefix tokens included).
            check: ``"error"`` (default): raw-looking input (DN, 8-bit pixels, a constant band, wavelengths in
                other units) raises ``ValueError``; ``"warn"``: warns; ``"off"``: no such check.
            **inputs: model-specific inputs (none for plain ViTs).
        """
        width = self.check_inputs(x, width, mode=mode, output=output, check=check, **inputs)
        with torch.no_grad():
            return self.encode(x, width, mode, output, self.backend, **inputs)

    forward = run

    def reference(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
                  dtype: torch.dtype = torch.float64, check: str = "error", **inputs) -> torch.Tensor:
        """The plain PyTorch reference path (materialised slices, explicit attention), in ``dtype``."""
        width = self.check_inputs(x, width, mode=mode, output=output, check=check, **inputs)
        return self._reference(x, width, mode, output, dtype, inputs)

    def _reference(self, x: torch.Tensor, width: float, mode: str, output: str, dtype: torch.dtype,
                   inputs: dict) -> torch.Tensor:
        from .reference import REFERENCE

        with torch.no_grad():
            return self.encode(x.to(dtype), width, mode, output, REFERENCE, **inputs)

    def encode(self, x: torch.Tensor, width: float, mode: str, output: str, blocks: Backend, **inputs
               ) -> torch.Tensor:
        """The forward pass after the input checks, computed in ``x.dtype``: stem, blocks, final norm, pooling.

        ``blocks`` runs the transformer blocks and norms: the model's backend (:meth:`run`) or the reference
        path (:meth:`reference`). Families with several encoders override this method. It checks nothing: call
        it on inputs that passed :meth:`check_inputs` (as ``run`` does), or from traced code (export, CUDA graphs).
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
                   check: str = "error", **inputs) -> dict[float, torch.Tensor]:
        """:meth:`run` at every width of ``widths``, with the unslimmed stem computed once.

        The stem (patch embedding, positions, class token) is the same at every width, so a width sweep
        embeds ``x`` once and runs only the blocks, the final norm and the pooling per width. Returns
        ``{float(width): output}`` in the order of ``widths``, each equal to ``run(x, width, ...)``. Families
        that override :meth:`encode` (several encoders, e.g. CROMA) run it once per width.
        """
        widths = self.check_inputs(x, list(widths), mode=mode, output=output, check=check, **inputs)
        backend = self.backend
        with torch.no_grad():
            if type(self).encode is not SlimModel.encode:
                return {w: self.encode(x, w, mode, output, backend, **inputs) for w in widths}
            stem = self.embed(x, **inputs)
            bias = self.attention_bias(x.shape[-2], x.shape[-1], x.dtype)
            return {w: self._encode_stem(stem, self.plan(w, mode), bias, output, backend) for w in widths}

    def validate(self, x: torch.Tensor, width: float = 1.0, *, mode: str = "attn+ffn", output: str = "pooled",
                 check: str = "error", **inputs) -> ValidationReport:
        """Run the fast path and the float64 reference on ``x`` and report their difference."""
        width = self.check_inputs(x, width, mode=mode, output=output, check=check, **inputs)
        backend = self.backend
        with torch.no_grad():
            fast = self.encode(x, width, mode, output, backend, **inputs).double()
        ref = self._reference(x, width, mode, output, torch.float64, inputs)
        diff = fast - ref
        return ValidationReport(
            width=width, mode=mode, backend=backend.name, dtype=self.dtype,
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

    def prepare(self, raw, *, bands, units: str | None = None, gsd: float | None = None, size=None,
                add_offset: float = 0.0, stats=None):
        """Raw sensor values with named bands -> the input this checkpoint expects (see :mod:`slimkern.prepare`).

        Returns a :class:`~slimkern.prepare.Prepared`: ``run(p.x, width, **p.inputs)``.
        """
        from .prepare import prepare

        return prepare(self, raw, bands=bands, units=units, gsd=gsd, size=size, add_offset=add_offset, stats=stats)

    def provenance(self, *, width: float | None = None, mode: str | None = None, prepared=None) -> dict:
        """Run metadata for an embedding: model, checkpoint hash, width, mode, input contract used, dtype, device,
        backend and library versions (see :mod:`slimkern.provenance`)."""
        from .provenance import provenance

        return provenance(self, width=width, mode=mode, prepared=prepared)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per band, with the spec's statistics (identity where they come from the data).

        ``x`` must be in model units (the spec's ``(DN + offset) * scale``, e.g. 8-bit RGB divided by 255).
        """
        self.check_tensor(x, check_dtype=False)
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

    def extra_repr(self) -> str:
        spec = self.blocks[0].spec
        return (f"name={self.cfg.name}, depth={len(self.blocks)}, dim={self.dim}, heads={spec.num_heads}, "
                f"head_dim={spec.head_dim}, mlp_hidden={spec.mlp_hidden}, backend={self.backend_name}")

