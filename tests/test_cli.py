import pytest

from slimkern.cli import main
from slimkern.registry import get_cfg, list_models


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "satmae_vitl_rgb" in out and "alias of satmae_vitl_rgb" in out


def test_info(capsys):
    assert main(["info", "satmae"]) == 0
    out = capsys.readouterr().out
    for text in ("depth 24, dim 1024, heads 16 x 64", "R, G, B", "0.4182007312774658", "torch: available",
                 "attn+ffn      0.1    6   409"):
        assert text in out, text


@pytest.mark.parametrize("name", sorted({get_cfg(n).name for n in list_models()}))
def test_info_for_every_model(name, capsys):
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    cfg = get_cfg(name)
    assert out.startswith(f"{name}: ") and cfg.bands[0] in out and "run() inputs   x [B, C, H, W]" in out
    assert "attn+ffn    0.001" in out


def test_flops_paper_grid(capsys):
    assert main(["flops", "satmae", "--widths", "paper", "--mode", "attn+ffn"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("attn+ffn")]
    assert len(rows) == 31
    assert rows[-1].split()[1:4] == ["1", "64", "4096"] and rows[-1].endswith("100.00%")


def test_flops_all_modes(capsys):
    assert main(["flops", "satmae", "--widths", "1,0.1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nattn ") == 2 and out.count("\nffn ") == 2


def test_errors_are_reported_not_raised(capsys):
    assert main(["info", "satmea"]) == 2
    assert "Did you mean 'satmae'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["flops", "satmae", "--widths", "half"])


@pytest.mark.slow
def test_demo_runs_on_the_shipped_sample(capsys):
    assert main(["demo", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "EuroSAT" in out and out.count("x ") >= 5


def test_flops_all_models(capsys):
    assert main(["flops", "--all", "--widths", "1,0.001"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("satmae_vitl_rgb")]
    assert len(rows) == 2 and rows[0][5:] == ["100.00%"] * 3
    assert float(rows[1][5].rstrip("%")) < 1.0  # the smallest budget of SatMAE ViT-L: 0.87 %


def test_flops_needs_a_name_or_all(capsys):
    assert main(["flops"]) == 2
    assert "--all" in capsys.readouterr().err


def test_sweep_takes_band_names_and_units():
    from slimkern.cli import build_parser

    args = build_parser().parse_args(["sweep", "--out", "x", "--band-names", "B04, B03,B02", "--units", "reflectance"])
    assert args.band_names == ("B04", "B03", "B02") and args.units == "reflectance"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--out", "x", "--band-names", "B04,,B02"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--out", "x", "--units", "percent"])
