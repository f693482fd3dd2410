"""The width-prefix storage layout: exact inverses, and every slimmed slice is a prefix."""

import pytest
import torch

from slimkern import layout
from slimkern.reference import kept_head_dims


@pytest.mark.parametrize("heads, head_dim", [(2, 64), (3, 5), (16, 48)])
def test_round_trips_are_exact(heads, head_dim):
    d = 7
    qkv = torch.randn(3 * heads * head_dim, d)
    bias = torch.randn(3 * heads * head_dim)
    proj = torch.randn(d, heads * head_dim)
    assert torch.equal(layout.qkv_to_official(layout.qkv_to_prefix(qkv, heads, head_dim), heads, head_dim), qkv)
    assert torch.equal(layout.qkv_to_official(layout.qkv_to_prefix(bias, heads, head_dim), heads, head_dim), bias)
    assert torch.equal(layout.heads_cols_to_official(layout.heads_cols_to_prefix(proj, heads, head_dim), heads,
                                                     head_dim), proj)


@pytest.mark.parametrize("kept", [1, 2, 5])
def test_prefix_holds_exactly_the_papers_rows_and_columns(kept):
    heads, head_dim, d = 3, 5, 4
    inner = heads * head_dim
    # label every row/column with its official index so the check is about positions, not values
    qkv = torch.arange(3 * inner, dtype=torch.float64)[:, None].expand(-1, d)
    proj = torch.arange(inner, dtype=torch.float64)[None, :].expand(d, -1)
    idx = kept_head_dims(heads, head_dim, kept)
    stored_qkv = layout.qkv_to_prefix(qkv, heads, head_dim)[: 3 * heads * kept, 0]
    want = torch.cat([idx, inner + idx, 2 * inner + idx]).double()
    assert sorted(stored_qkv.tolist()) == sorted(want.tolist())
    stored_proj = layout.heads_cols_to_prefix(proj, heads, head_dim)[0, : heads * kept]
    assert sorted(stored_proj.tolist()) == sorted(idx.double().tolist())


def test_kept_head_dims_is_first_dims_of_every_head():
    assert kept_head_dims(3, 4, 2).tolist() == [0, 1, 4, 5, 8, 9]
