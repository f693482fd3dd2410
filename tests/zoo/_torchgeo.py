"""torchgeo's model zoo, the independent implementation for the width-1.0 comparisons (the ``compare`` extra)."""

from __future__ import annotations

import types

import pytest


def torchgeo_models() -> types.ModuleType:
    """``torchgeo.models``, skipping the test where torchgeo is not installed (e.g. the offline GPU machine)."""
    return pytest.importorskip("torchgeo.models", reason="torchgeo is not installed (pip install -e '.[compare]')")
