"""The sandwich rule: full and smallest width every step, random widths inside the range, reproducible."""

import math

import pytest
import torch

from slimkern.train.widths import check_min_width, sandwich_widths, step_generator


@pytest.mark.parametrize("min_width,num_random", [(0.1, 2), (0.25, 5), (0.001, 1), (0.5, 0)])
def test_sandwich_has_both_ends_and_random_widths_in_range(min_width, num_random):
    seen = set()
    for step in range(50):
        widths = sandwich_widths(step_generator(0, step), min_width, num_random)
        assert widths[0] == 1.0 and widths[1] == min_width
        assert len(widths) == 2 + num_random
        assert all(min_width <= w <= 1.0 for w in widths[2:])
        seen.update(widths[2:])
    if num_random:
        assert len(seen) == 50 * num_random  # different draws every step
        assert min(seen) < min_width + 0.2 * (1 - min_width) and max(seen) > 1 - 0.2 * (1 - min_width)


def test_widths_are_a_function_of_seed_and_step():
    a = [sandwich_widths(step_generator(3, s), 0.1, 2) for s in range(5)]
    assert a == [sandwich_widths(step_generator(3, s), 0.1, 2) for s in range(5)]
    assert a != [sandwich_widths(step_generator(4, s), 0.1, 2) for s in range(5)]
    assert torch.equal(torch.rand(3, generator=step_generator(3, 2)), torch.rand(3, generator=step_generator(3, 2)))


def test_min_width_one_trains_the_full_width_alone():
    assert sandwich_widths(step_generator(0, 0), 1.0, 2) == [1.0]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, math.nan, math.inf])
def test_width_range_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_min_width(bad)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sandwich_widths(step_generator(0, 0), bad, 2)


@pytest.mark.parametrize("bad", [True, "0.1", None])
def test_min_width_must_be_a_number(bad):
    with pytest.raises(TypeError, match="min_width"):
        check_min_width(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_number_of_random_widths_is_checked(bad):
    with pytest.raises(ValueError, match="random widths"):
        sandwich_widths(step_generator(0, 0), 0.1, bad)
