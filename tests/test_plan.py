import pytest

from slimkern.plan import MODES, PAPER_WIDTHS, make_plan, slim_dim

VIT_L = ((16, 64, 4096),) * 24


def test_paper_grid_has_31_widths():
    assert len(PAPER_WIDTHS) == 31 and PAPER_WIDTHS[0] == 0.001 and PAPER_WIDTHS[-1] == 1.0


@pytest.mark.parametrize(
    "width, d_k, d_h",
    [
        (1.0, 64, 4096), (0.8, 51, 3276), (0.75, 48, 3072), (0.667, 42, 2732), (0.6, 38, 2457),
        (0.5, 32, 2048), (0.4, 25, 1638), (0.333, 21, 1363), (0.25, 16, 1024), (0.2, 12, 819),
        (0.1, 6, 409), (0.08, 5, 327), (0.0667, 4, 273), (0.05, 3, 204), (0.0333, 2, 136),
        (0.02, 1, 81), (0.01, 1, 40), (0.005, 1, 20), (0.0025, 1, 10), (0.001, 1, 4),
    ],
)
def test_paper_rule_vit_large(width, d_k, d_h):
    block = make_plan(width, "attn+ffn", VIT_L).blocks[0]
    assert (block.head_dim, block.mlp_hidden) == (d_k, d_h)


def test_every_paper_width_follows_int_truncation():
    for width in PAPER_WIDTHS:
        for full in (48, 64, 1536, 3072, 4096):
            assert slim_dim(width, full) == max(1, int(width * full))


def test_truncation_not_rounding_and_minimum_one():
    assert slim_dim(0.0999, 10) == 1  # 0.999 truncates to 0, then the minimum of 1
    assert slim_dim(0.39, 10) == 3  # 3.9 -> 3 (rounding would give 4)
    assert slim_dim(0.001, 64) == 1


def test_modes_slim_only_their_part():
    sa = make_plan(0.1, "attn", VIT_L).blocks[0]
    sf = make_plan(0.1, "ffn", VIT_L).blocks[0]
    assert (sa.head_dim, sa.mlp_hidden) == (6, 4096)
    assert (sf.head_dim, sf.mlp_hidden) == (64, 409)
    assert make_plan(1.0, "attn+ffn", VIT_L).is_full


def test_equal_plans_are_one_object():
    # 0.002 and 0.0025 both give d_k' = 1; ViT-S FFN (1536): int(3.07) = 3 and int(3.84) = 3
    vit_s = ((6, 64, 1536),) * 12
    assert make_plan(0.002, "attn+ffn", vit_s) is make_plan(0.0025, "attn+ffn", vit_s)
    assert make_plan(0.002, "attn", VIT_L) is make_plan(0.01, "attn", VIT_L)
    assert make_plan(0.1, "attn+ffn", VIT_L) is not make_plan(0.2, "attn+ffn", VIT_L)
    distinct = {make_plan(w, "attn+ffn", vit_s) for w in PAPER_WIDTHS}
    assert len(distinct) < len(PAPER_WIDTHS)


def test_softmax_scale_uses_reduced_head_dim():
    assert make_plan(0.1, "attn+ffn", VIT_L).blocks[0].scale == pytest.approx(6**-0.5)


@pytest.mark.parametrize("width", [0, -0.1, 1.01, float("nan"), float("inf")])
def test_width_outside_range(width):
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
        make_plan(width, "attn+ffn", VIT_L)


@pytest.mark.parametrize("width", ["0.5", None, True])
def test_width_wrong_type(width):
    with pytest.raises(TypeError, match="width must be a number"):
        make_plan(width, "attn+ffn", VIT_L)


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode 'both'"):
        make_plan(0.5, "both", VIT_L)
    assert MODES == ("attn+ffn", "attn", "ffn")
