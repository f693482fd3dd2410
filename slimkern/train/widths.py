"""The sandwich rule (US-Nets): the widths one training step runs.

Every step trains the full width (1.0, whose output is the in-place distillation target), the smallest
width of the range (``min_width``) and ``num_random`` widths drawn uniformly from ``[min_width, 1]``;
their gradients are accumulated into one optimizer step. Training the two ends of the range every step
is what makes every width in between good (US-Nets, section 3.2).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def check_min_width(min_width: float) -> float:
    """``min_width`` as a float, or a clear error if it is not in (0, 1]."""
    if isinstance(min_width, bool) or not isinstance(min_width, (int, float)):
        raise TypeError(f"min_width must be a number in (0, 1], got {type(min_width).__name__} {min_width!r}")
    min_width = float(min_width)
    if not math.isfinite(min_width) or not 0.0 < min_width <= 1.0:
        raise ValueError(f"the width range [min_width, 1] must lie in (0, 1] (1.0 = the full model); "
                         f"got min_width={min_width!r}")
    return min_width


def check_num_random(num_random: int) -> int:
    if isinstance(num_random, bool) or not isinstance(num_random, int) or num_random < 0:
        raise ValueError(f"the number of random widths per step must be an integer >= 0, got {num_random!r}")
    return num_random


def sandwich_widths(generator: torch.Generator, min_width: float, num_random: int) -> list[float]:
    """``[1.0, min_width, r_1, ..., r_n]`` with ``r_i ~ U[min_width, 1)`` drawn from ``generator``.

    The full width comes first: the smaller widths learn its (detached) output. With ``min_width == 1``
    the range is one point and the step trains the full width alone (plain fine-tuning, a control).
    """
    min_width, num_random = check_min_width(min_width), check_num_random(num_random)
    if min_width == 1.0:
        return [1.0]
    draws = torch.rand(num_random, generator=generator, dtype=torch.float64).tolist()
    return [1.0, min_width] + [min_width + (1.0 - min_width) * u for u in draws]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random source of one training step, a pure function of ``(seed, step)``.

    Widths, augmentation and data order depend on nothing else, so a resumed run draws exactly what an
    uninterrupted one would have (no generator state to save).
    """
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
