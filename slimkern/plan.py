"""The slimming plan: which inner widths every transformer block keeps at a width factor.

Paper rule (Hackel, Burgert, Demir 2026): ``d_k' = max(1, int(s * d_k))`` per attention head and
``d_h' = max(1, int(s * d_h))`` FFN units, with Python's truncating ``int``. Everything else
(token width, heads, norms, stem) stays at full width.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cache

MODES = ("attn+ffn", "attn", "ffn")

#: The paper's 31 width factors.
PAPER_WIDTHS = (
    0.001, 0.002, 0.0025, 0.00333, 0.004, 0.005, 0.006, 0.00667, 0.0075, 0.008,
    0.01, 0.02, 0.025, 0.0333, 0.04, 0.05, 0.06, 0.0667, 0.075, 0.08,
    0.1, 0.2, 0.25, 0.333, 0.4, 0.5, 0.6, 0.667, 0.75, 0.8, 1.0,
)  # fmt: skip


def is_real_number(value: object) -> bool:
    """True for Python and numpy ints and floats (``np.float32(0.5)``, ``np.int64(1)``), False for booleans."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # np.bool_ is not numbers.Real


def check_width(width: float) -> float:
    """Return ``width`` as a float, or raise if it is not a finite number in (0, 1]."""
    if not is_real_number(width):
        raise TypeError(f"width must be a number in (0, 1], got {type(width).__name__} {width!r}")
    width = float(width)
    if not math.isfinite(width) or not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1] (1.0 = the full model), got {width!r}")
    return width


def check_mode(mode: str) -> str:
    """Return ``mode`` or raise with the list of valid modes."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(repr(m) for m in MODES)}")
    return mode


def slim_dim(width: float, full: int) -> int:
    """The paper's rule ``max(1, int(width * full))`` for one inner dimension."""
    return max(1, int(width * full))


@dataclass(frozen=True)
class BlockPlan:
    """Widths one transformer block runs at: heads x kept head dims, kept FFN units."""

    num_heads: int
    head_dim: int  # d_k' (kept dims per head)
    full_head_dim: int  # d_k
    mlp_hidden: int  # d_h'
    full_mlp_hidden: int  # d_h

    @property
    def attn_width(self) -> int:
        """``H * d_k'``: columns of the out-projection (and rows per q/k/v) that are read."""
        return self.num_heads * self.head_dim

    @property
    def scale(self) -> float:
        """Softmax scale ``1 / sqrt(d_k')``: the paper scales by the REDUCED head dim."""
        return self.head_dim**-0.5


@dataclass(frozen=True)
class SlimPlan:
    """The per-block widths of a whole encoder. Hashable; equal plans are one shared object.

    Several width factors often give the same plan (e.g. every ``s < 1/64`` keeps one dim per
    64-dim head); :func:`make_plan` returns the same instance for them so caches keyed on the
    plan (CUDA graphs, profiles) are shared.
    """

    mode: str
    blocks: tuple[BlockPlan, ...]

    @property
    def is_full(self) -> bool:
        return all(b.head_dim == b.full_head_dim and b.mlp_hidden == b.full_mlp_hidden for b in self.blocks)

    def summary(self) -> str:
        """``d_k'/d_h'`` of the first block (all blocks agree for the uniform models of the zoo)."""
        b = self.blocks[0]
        return f"d_k'={b.head_dim}/{b.full_head_dim} d_h'={b.mlp_hidden}/{b.full_mlp_hidden}"


@cache
def _intern(plan: SlimPlan) -> SlimPlan:
    return plan


def make_plan(width: float, mode: str, block_dims: tuple[tuple[int, int, int], ...]) -> SlimPlan:
    """Plan for every block given ``(num_heads, head_dim, mlp_hidden)`` per block.

    >>> p = make_plan(0.1, "attn+ffn", ((16, 64, 4096),) * 24)
    >>> p.blocks[0].head_dim, p.blocks[0].mlp_hidden
    (6, 409)
    """
    width = check_width(width)
    check_mode(mode)
    slim_attn = mode in ("attn+ffn", "attn")
    slim_ffn = mode in ("attn+ffn", "ffn")
    blocks = tuple(
        BlockPlan(
            num_heads=heads,
            head_dim=slim_dim(width, head_dim) if slim_attn else head_dim,
            full_head_dim=head_dim,
            mlp_hidden=slim_dim(width, hidden) if slim_ffn else hidden,
            full_mlp_hidden=hidden,
        )
        for heads, head_dim, hidden in block_dims
    )
    return _intern(SlimPlan(mode=mode, blocks=blocks))
