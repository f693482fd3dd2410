"""``Engine``: one loaded model answering compute budgets (a width, a FLOPs fraction or a latency) per call.

Budget rules (exactly one of ``width``, ``flops``, ``latency_ms``; none means ``width=1.0`` as in ``run``):

- ``width=s``: that width, as ``SlimModel.run``.
- ``flops=f``: the largest candidate width whose relative compute ``FLOPs(s) / FLOPs(1)`` at the batch's image
  size and mode is ``<= f``. A budget below the smallest candidate's compute raises ``ValueError``.
- ``latency_ms=t``: the largest profiled width whose measured latency fits ``t`` for this batch. Batch sizes
  round UP to the smallest profiled batch size ``>=`` the batch (latency grows with the batch, so this never
  promises a time measured on fewer images); beyond the largest profiled batch the latency of the largest is
  scaled linearly with the batch size (a ViT's time per image is at best constant once the device is full).

Candidate widths default to the paper's grid (:data:`slimkern.PAPER_WIDTHS`). On CUDA the forward runs through
per-(plan, batch bucket) CUDA graphs (:mod:`slimkern.serving.graphs`); on CPU it runs eagerly.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..input_check import check_mode as check_input_mode
from ..model import SlimModel
from ..plan import PAPER_WIDTHS, SlimPlan, check_mode, check_width
from .graphs import DEFAULT_BUCKETS, GraphCache
from .profile import LatencyProfile, fingerprint

DEFAULT_PROFILE_BATCHES = (1, 4, 16)


@dataclass(frozen=True)
class Choice:
    """The width a budget resolved to, its plan and its relative compute at the batch's image size."""

    width: float
    plan: SlimPlan
    relative_flops: float
    budget: str  # the request in words, e.g. "flops<=0.05" or "latency<=20ms (batch 3 -> profiled batch 4)"


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} budget must be a fraction of the full model's compute in (0, 1], got {value!r}")
    return value


class Engine:
    """Serve every compute budget from one loaded :class:`SlimModel` (one copy of the weights).

    Args:
        model: the loaded model (any device, dtype and backend).
        widths: candidate widths that ``flops`` and ``latency_ms`` budgets choose from (default: the paper's 31).
        graphs: capture CUDA graphs per (plan, batch bucket); default ``True`` on CUDA. Ignored on CPU.
        buckets: batch sizes graphs are captured for (batches are padded up to the next bucket).
        graph_max_entries, graph_max_bytes: bounds of the graph cache (least recently used graphs go first).
        check: the input check of every call (``model.run(check=...)``): ``"error"``, ``"warn"`` or ``"off"``.

    >>> engine = slimkern.Engine(slimkern.load("satmae"))            # doctest: +SKIP
    >>> emb, choice = engine.run_with_choice(x, flops=0.05)          # doctest: +SKIP
    >>> choice.width, choice.relative_flops                          # doctest: +SKIP
    (0.04, 0.0464...)
    """

    def __init__(self, model: SlimModel, *, widths: Sequence[float] = PAPER_WIDTHS, graphs: bool | None = None,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS, graph_max_entries: int = 32,
                 graph_max_bytes: int | None = None, check: str = "error") -> None:
        if not isinstance(model, SlimModel):
            raise TypeError(f"Engine wraps a slimkern SlimModel (from slimkern.load), got {type(model).__name__}")
        if not widths:
            raise ValueError("widths must list at least one candidate width in (0, 1]")
        self.model = model
        self.check = check_input_mode(check)
        self.widths = tuple(sorted({check_width(w) for w in widths}))
        use_graphs = model.device.type == "cuda" if graphs is None else graphs and model.device.type == "cuda"
        self.graphs = (GraphCache(model, buckets=buckets, max_entries=graph_max_entries, max_bytes=graph_max_bytes)
                       if use_graphs else None)
        self.latency_profile: LatencyProfile | None = None
        self._relative: dict[tuple[float, str, tuple[int, int]], float] = {}

    # -- budgets -> width -----------------------------------------------------------------------------
    def relative_flops(self, width: float, mode: str = "attn+ffn", image_size: tuple[int, int] | None = None) -> float:
        """``model.relative_flops`` at ``image_size`` (default: the model's), cached per (width, mode, size)."""
        size = image_size or (self.model.cfg.arch.img_size,) * 2
        key = (width, mode, tuple(size))
        if key not in self._relative:
            self._relative[key] = self.model.relative_flops(width, mode=mode, image_size=key[2])
        return self._relative[key]

    def choose(self, batch: int = 1, *, width: float | None = None, flops: float | None = None,
               latency_ms: float | None = None, mode: str = "attn+ffn",
               image_size: tuple[int, int] | None = None) -> Choice:
        """Resolve one budget to a width for a batch of ``batch`` images of ``image_size`` (see the module doc).

        Raises:
            ValueError: more than one budget, a budget out of range or below every candidate, a latency budget
                without a profile (or with one for another mode or image size).
            TypeError: a budget that is not a number.
        """
        given = {k: v for k, v in (("width", width), ("flops", flops), ("latency_ms", latency_ms)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"give one budget, got {', '.join(f'{k}={v!r}' for k, v in given.items())}; "
                             "width (a factor in (0, 1]), flops (a fraction of the full compute) or latency_ms")
        check_mode(mode)
        size = tuple(image_size or (self.model.cfg.arch.img_size,) * 2)
        if flops is not None:
            budget = _check_fraction("flops", flops)
            fits = [w for w in self.widths if self.relative_flops(w, mode, size) <= budget]
            if not fits:
                low = self.widths[0]
                raise ValueError(f"flops budget {budget:g} is below the smallest candidate width {low:g}, which "
                                 f"needs {self.relative_flops(low, mode, size):.4g} of the full compute "
                                 f"({self.model.cfg.name}, mode {mode}, {size[0]}x{size[1]} px; the stem is never "
                                 "slimmed)")
            chosen, words = fits[-1], f"flops<={budget:g}"
        elif latency_ms is not None:
            chosen, words = self._choose_latency(latency_ms, batch, mode, size)
        else:
            chosen = check_width(1.0 if width is None else width)
            words = f"width={chosen:g}"
        return Choice(chosen, self.model.plan(chosen, mode), self.relative_flops(chosen, mode, size), words)

    def _choose_latency(self, latency_ms: float, batch: int, mode: str, size: tuple[int, int]) -> tuple[float, str]:
        if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)):
            raise TypeError(f"latency_ms must be a number of milliseconds, got {type(latency_ms).__name__}")
        if not math.isfinite(latency_ms) or latency_ms <= 0:
            raise ValueError(f"latency_ms must be a positive number of milliseconds, got {latency_ms!r}")
        profile = self._current_profile()
        if profile.mode != mode or tuple(profile.image_size) != size:
            raise ValueError(f"the latency profile was measured for mode {profile.mode!r} at "
                             f"{profile.image_size[0]}x{profile.image_size[1]} px, this request is mode {mode!r} at "
                             f"{size[0]}x{size[1]} px; profile that case with engine.profile(mode=..., image_size=...)")
        sizes = profile.batch_sizes
        profiled = next((b for b in sizes if b >= batch), sizes[-1])
        scale = max(1.0, batch / profiled)  # beyond the largest profiled batch: linear in the batch size
        times = {w: profile.ms(profiled, w) * scale for w in profile.widths(profiled)}
        fits = [w for w, ms in times.items() if ms <= latency_ms]
        how = f"batch {batch} -> profiled batch {profiled}" + (f" x {scale:.3g}" if scale > 1 else "")
        if not fits:
            fastest = min(times, key=times.get)
            raise ValueError(f"latency budget {latency_ms:g} ms cannot be met for a batch of {batch}: the fastest "
                             f"profiled width {fastest:g} takes {times[fastest]:.3g} ms ({how}, "
                             f"{profile.fingerprint['device']})")
        return max(fits), f"latency<={latency_ms:g}ms ({how})"

    # -- running --------------------------------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, output: str = "pooled", **inputs) -> None:
        """The model's input checks (:meth:`SlimModel.check_inputs <slimkern.model.SlimModel.check_inputs>`, with
        the engine's ``check`` mode) for a request whose width a budget picks later; servers run them per request,
        before batching."""
        self.model.check_inputs(x, None, output=output, check=self.check, **inputs)

    def run_with_choice(self, x: torch.Tensor, *, width: float | None = None, flops: float | None = None,
                        latency_ms: float | None = None, mode: str = "attn+ffn", output: str = "pooled",
                        **inputs) -> tuple[torch.Tensor, Choice]:
        """Embed ``x`` (normalised, ``[B, C, H, W]``, the model's device and dtype) at the width a budget allows.

        Returns the embeddings (as :meth:`SlimModel.run`) and the :class:`Choice` made.
        """
        self.check_inputs(x, output, **inputs)
        choice = self.choose(x.shape[0], width=width, flops=flops, latency_ms=latency_ms, mode=mode,
                             image_size=(x.shape[-2], x.shape[-1]))
        return self.execute(x, choice, output, checked=True, **inputs), choice

    def run(self, x: torch.Tensor, *, width: float | None = None, flops: float | None = None,
            latency_ms: float | None = None, mode: str = "attn+ffn", output: str = "pooled",
            **inputs) -> torch.Tensor:
        """Embeddings of ``x`` at the width a budget allows (see :meth:`run_with_choice`)."""
        return self.run_with_choice(x, width=width, flops=flops, latency_ms=latency_ms, mode=mode, output=output,
                                    **inputs)[0]

    def execute(self, x: torch.Tensor, choice: Choice, output: str = "pooled", *, checked: bool = False,
                **inputs) -> torch.Tensor:
        """Run ``x`` at a resolved :class:`Choice`: a CUDA graph where one applies, the model's forward otherwise.

        ``checked``: ``x`` already passed :meth:`check_inputs` (``run_with_choice``; the server's batches, merged from
        requests checked one by one), so it is not checked again.
        """
        if not checked:
            self.check_inputs(x, output, **inputs)
        if self.graphs is None or inputs:
            with torch.no_grad():
                return self.model.encode(x, choice.width, choice.plan.mode, output, self.model.backend, **inputs)
        return self.graphs.run(x, choice.width, choice.plan.mode, output)

    # -- latency profile ------------------------------------------------------------------------------
    def profile(self, batch_sizes: Sequence[int] = DEFAULT_PROFILE_BATCHES, widths: Sequence[float] | None = None, *,
                repeats: int = 3, mode: str = "attn+ffn", output: str = "pooled",
                image_size: tuple[int, int] | None = None) -> LatencyProfile:
        """Measure the median latency (ms, after one warm-up) of every width at every batch size on this device.

        Widths with the same plan are measured once. The result becomes the engine's profile and is returned.
        """
        check_mode(mode)
        if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {batch_sizes!r}")
        widths = self.widths if widths is None else tuple(sorted({check_width(w) for w in widths}))
        size = tuple(image_size or (self.model.cfg.arch.img_size,) * 2)
        self.model.check_image_size(*size)
        profile = LatencyProfile(self.fingerprint(), mode, output, size)
        bands = len(self.model.cfg.bands)
        for batch in sorted({int(b) for b in batch_sizes}):
            x = torch.randn(batch, bands, *size, dtype=self.model.dtype, device=self.model.device)
            by_plan: dict[SlimPlan, float] = {}
            for width in widths:
                choice = self.choose(batch, width=width, mode=mode, image_size=size)
                if choice.plan not in by_plan:
                    by_plan[choice.plan] = self._median_ms(lambda c=choice, x=x: self.execute(x, c, output), repeats)
                profile.record(batch, width, by_plan[choice.plan])
        self.latency_profile = profile
        return profile

    def save_profile(self, path: str | os.PathLike) -> None:
        """Write the engine's latency profile as JSON (with the fingerprint it is valid for)."""
        if self.latency_profile is None:
            raise ValueError("no latency profile to save: call engine.profile() first")
        self.latency_profile.save(path)

    def load_profile(self, path: str | os.PathLike, *, refresh: bool = True) -> LatencyProfile:
        """Use a saved profile. If it was measured for another device, model, weights, dtype, backend, torch or
        graph setting (CUDA graphs and their buckets, or eager),
        re-measure it with the same batch sizes and widths and overwrite the file (``refresh=True``), or raise
        ``ValueError`` listing the differences (``refresh=False``)."""
        profile = LatencyProfile.load(path)
        stale = profile.stale_fields(self.fingerprint())
        if not stale:
            self.latency_profile = profile
            return profile
        if not refresh:
            raise ValueError(f"latency profile {os.fspath(path)!r} does not match this engine: {'; '.join(stale)}")
        warnings.warn(f"latency profile {os.fspath(path)!r} is stale ({'; '.join(stale)}); re-measuring it",
                      stacklevel=2)
        fresh = self._remeasure(profile)
        fresh.save(path)
        return fresh

    def fingerprint(self, *, weights: bool = True) -> dict[str, str]:
        """The model's :func:`~slimkern.serving.profile.fingerprint` plus how this engine runs it: CUDA graphs
        (and their batch buckets, which pad batches) or eager, which changes the latency as much as the device."""
        fp = fingerprint(self.model, weights=weights)
        fp["graphs"] = "eager" if self.graphs is None else f"buckets {','.join(map(str, self.graphs.buckets))}"
        return fp

    def _current_profile(self) -> LatencyProfile:
        """The profile, re-measured first if the model moved to another device, dtype or backend since."""
        if self.latency_profile is None:
            raise ValueError("latency_ms budgets need a latency profile: call engine.profile() on this device "
                             "(or engine.load_profile(path) with a saved one)")
        stale = self.latency_profile.stale_fields(self.fingerprint(weights=False))
        if stale:
            warnings.warn(f"the latency profile is stale ({'; '.join(stale)}); re-measuring it", stacklevel=3)
            self._remeasure(self.latency_profile)
        return self.latency_profile

    def _remeasure(self, old: LatencyProfile) -> LatencyProfile:
        widths = sorted({w for b in old.batch_sizes for w in old.widths(b)})
        return self.profile(old.batch_sizes, widths, mode=old.mode, output=old.output, image_size=old.image_size)

    def _median_ms(self, fn, repeats: int) -> float:
        cuda = self.model.device.type == "cuda"
        fn()
        times = []
        for _ in range(max(1, repeats)):
            if cuda:
                torch.cuda.synchronize(self.model.device)
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(self.model.device)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
