"""Command-line argument types shared by ``slimkern``'s subcommands (:mod:`slimkern.cli` and each feature's own
command module), so that no command module imports the CLI that imports it."""

from __future__ import annotations

import argparse

from .plan import PAPER_WIDTHS
from .prepare import RAW_UNITS


def parse_widths(text: str) -> tuple[float, ...]:
    """``"paper"`` (the paper's 31 widths) or a comma-separated list such as ``1,0.5,0.1``."""
    if text == "paper":
        return PAPER_WIDTHS
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths takes 'paper' or numbers like 1,0.5,0.1; got {text!r}") from None


def parse_bands(text: str) -> tuple[int, ...]:
    """``--bands 3,2,1``: 0-based band indices into each image file."""
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bands takes 0-based indices like 3,2,1; got {text!r}") from None


def parse_band_names(text: str) -> tuple[str, ...]:
    """``--band-names B04,B03,B02``: the names of each image file's bands, in order."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"--band-names takes names like B04,B03,B02; got {text!r}")
    return names


def positive_int(text: str) -> int:
    """A whole number >= 1 (batch sizes, counts, sizes): refused when parsed, not deep inside the command."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port 1-65535 (the OS would silently take 99999 modulo 65536)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def add_raw_input_arguments(p: argparse.ArgumentParser, band_names_help: str) -> None:
    """``--band-names`` and ``--units``: what the raw values are, as :meth:`SlimModel.prepare` takes them."""
    p.add_argument("--band-names", type=parse_band_names, default=None, help=band_names_help)
    p.add_argument("--units", choices=RAW_UNITS, default=None,
                   help="what the stored values are (default: the model's unit, e.g. DN: 8-bit pixels, Sentinel-2 "
                        "reflectance x 10000)")
