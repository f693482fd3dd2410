import math

import torch

from slimkern.zoo.pos_embed import sincos_1d, sincos_2d


def test_sincos_1d_against_formula():
    emb = sincos_1d(8, torch.tensor([0.0, 3.0]))
    w = [10000 ** (-i / 4) for i in range(4)]
    want = [[math.sin(3 * wi) for wi in w] + [math.cos(3 * wi) for wi in w]]
    torch.testing.assert_close(emb[1:], torch.tensor(want, dtype=torch.float64))
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4, dtype=torch.float64))


def test_sincos_2d_is_column_first_row_major():
    emb = sincos_2d(16, 3, 5)
    assert emb.shape == (15, 16)
    token = 1 * 5 + 4  # row 1, column 4
    torch.testing.assert_close(emb[token, :8], sincos_1d(8, torch.tensor([4.0]))[0])
    torch.testing.assert_close(emb[token, 8:], sincos_1d(8, torch.tensor([1.0]))[0])


def test_scale_multiplies_positions():
    torch.testing.assert_close(sincos_2d(16, 2, 2, scale=2.5)[3, :8], sincos_1d(8, torch.tensor([2.5]))[0])
