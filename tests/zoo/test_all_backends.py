"""Every registered model through every available backend, against the float64 reference path.

Registry-driven (a new model is covered as soon as it is registered): a small random model of each
family (one block, narrow, few tokens) runs at full and reduced width on each backend usable here
(``torch``; ``triton`` in the interpreter on a CPU, on CUDA with a GPU).
"""

import warnings

import pytest
import torch

import slimkern
from slimkern.backends import list_backends
from slimkern.registry import get_cfg
from tests.helpers import rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = sorted({get_cfg(name).name for name in slimkern.list_models()})
BACKENDS = [name for name, why in list_backends().items() if why is None]
# family-specific extras: architecture fields that must shrink together, and run() inputs without defaults
ARCH = {"satmae_vitl_ms": {"channel_embed": 32}, "satmae_vitb_ms": {"channel_embed": 32},
        "croma_base": {"depth": 2}, "croma_large": {"depth": 2}}  # CROMA: radar and joint have depth // 2
INPUTS = {
    "panopticon_vitb14": {"wavelengths": [0.665, 0.56, 0.49]},
    **{name: {"temporal_coords": [[[2020.0, 100.0]]], "location_coords": [[45.0, 10.0]]}
       for name in NAMES if name.endswith("_tl")},
}


def small_model(name: str, backend: str) -> slimkern.SlimModel:
    arch = get_cfg(name).arch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkern.load(name, backend=backend, **{"depth": 1, "dim": 64, "num_heads": 2,
                                                        "img_size": 2 * arch.patch_size, **ARCH.get(name, {})})
    return model.to(DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_every_model_on_every_backend(name, backend):
    model = small_model(name, backend)
    inputs = INPUTS.get(name, {})
    bands = len(inputs["wavelengths"]) if "wavelengths" in inputs else len(model.cfg.bands)
    size = model.cfg.arch.img_size
    x = torch.randn(1, bands, size, size, device=DEVICE)
    assert model.backend.name == backend
    for width in (1.0, 0.1):
        fast = model.run(x, width, output="tokens", **inputs)
        assert rel_error(fast, model.reference(x, width, output="tokens", **inputs)) < 1e-5, (name, width)
