"""The shared patch embedding (patchify + GEMM) against the convolution it replaces, and every family's stem in
bfloat16 / float16 against float64.

The low-precision checks compare with float64, never with another low-precision convolution: the defect they
guard against (torch 2.14.1's oneDNN bf16 conv2d on AMX CPUs, garbage at 4-16 input channels) gives relative errors
near 1, far above the tolerances used here, so these tests would fail on such a CPU if any stem still ran it.
"""

from __future__ import annotations

import copy
import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F

import slimkern
from slimkern.backends import select_backend
from slimkern.registry import get_cfg
from slimkern.zoo import stem
from tests.helpers import OpRecorder, rel_error
from tests.zoo.test_all_backends import INPUTS, small_model

CHANNELS = range(1, 17)
LOW = (torch.bfloat16, torch.float16)
CANONICAL = sorted({get_cfg(name).name for name in slimkern.list_models()})
# stems that differ from a plain conv(kernel = stride = p): DOFA and Copernicus-FM pad by 1, TerraMind's linear
# layer reads (i, j, c)-flattened patches
PADDING = {"dofa": 1, "copernicus_fm": 1}
CHANNELS_LAST = {"terramind"}
# (patch, padding, channels_last) of every registered model
GEOMETRIES = sorted({(get_cfg(n).arch.patch_size, PADDING.get(get_cfg(n).family, 0),
                      get_cfg(n).family in CHANNELS_LAST) for n in CANONICAL})


def tolerance(dtype: torch.dtype) -> float:
    return select_backend("torch", torch.device("cpu"), dtype).tolerances[dtype]


def conv_patch_embed(x, weight, bias, patch, *, padding=0, channels_last=False):
    """The convolution every stem used to call (float64 only: that path is exact there)."""
    dim, channels = weight.shape[0], x.shape[1]
    kernel = (weight.reshape(dim, patch, patch, channels).permute(0, 3, 1, 2) if channels_last
              else weight.reshape(dim, channels, patch, patch))
    out = F.conv2d(x, kernel.to(x.dtype), None if bias is None else bias.to(x.dtype), stride=patch, padding=padding)
    return out.flatten(2).transpose(1, 2), tuple(out.shape[-2:])


def random_stem(channels: int, patch: int, dim: int = 24, bias: bool = True):
    weight = torch.randn(dim, channels, patch, patch, dtype=torch.float64) * (channels * patch * patch) ** -0.5
    return weight, (0.1 * torch.randn(dim, dtype=torch.float64) if bias else None)


def test_family_exceptions_are_registered_families():
    families = {get_cfg(name).family for name in CANONICAL}
    assert set(PADDING) | CHANNELS_LAST <= families


# -- exact: the GEMM equals the convolution in float64 --------------------------------------------------------------
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("patch, padding, size", [(16, 0, (48, 80)), (16, 1, (64, 48)), (14, 0, (29, 43)),
                                                  (14, 1, (42, 57)), (8, 0, (37, 45)), (8, 1, (17, 33)),
                                                  (1, 0, (3, 5)), (3, 2, (7, 4))])
def test_equals_conv_in_float64(channels, patch, padding, size):
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    weight, bias = random_stem(channels, patch)
    expected, grid = conv_patch_embed(x, weight, bias, patch, padding=padding)
    for channels_last in (False, True):
        w = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1) if channels_last else weight
        tokens, got_grid = stem.patch_embed(x, w, bias, patch, padding=padding, channels_last=channels_last)
        assert got_grid == grid and tokens.shape == expected.shape
        assert (tokens - expected).abs().max().item() <= 1e-12


def test_no_bias_and_flat_weight():
    x = torch.randn(1, 5, 24, 16, dtype=torch.float64)
    weight, _ = random_stem(5, 8)
    expected, _ = conv_patch_embed(x, weight, None, 8)
    tokens, grid = stem.patch_embed(x, weight.reshape(weight.shape[0], -1), None, 8)
    assert grid == (3, 2) and (tokens - expected).abs().max().item() <= 1e-12


def test_bad_shapes_are_refused():
    weight, bias = random_stem(4, 8)
    with pytest.raises(ValueError, match="8x8 patch of 3 bands has 192 values but the weight"):
        stem.patch_embed(torch.randn(1, 3, 16, 16, dtype=torch.float64), weight, bias, 8)
    with pytest.raises(ValueError, match="holds no 8x8 patch"):
        stem.patch_embed(torch.randn(1, 4, 7, 16, dtype=torch.float64), weight, bias, 8)
    with pytest.raises(ValueError, match=r"expects images \[B, C, H, W\]"):
        stem.patchify(torch.randn(4, 16, 16), 8)


# -- low precision: within the backend's tolerance of float64, at every family's geometry --------------------------
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("patch, padding, channels_last", GEOMETRIES)
def test_low_precision_geometries_against_float64(patch, padding, channels_last, dtype):
    for channels in CHANNELS:
        x = torch.randn(2, channels, 3 * patch, 2 * patch + 1, dtype=torch.float64)
        weight, bias = random_stem(channels, patch, dim=32)
        w = weight.permute(0, 2, 3, 1).reshape(32, -1) if channels_last else weight
        ref, _ = stem.patch_embed(x, w, bias, patch, padding=padding, channels_last=channels_last)
        out, _ = stem.patch_embed(x.to(dtype), w.to(dtype), bias.to(dtype), patch, padding=padding,
                                  channels_last=channels_last)
        assert out.dtype == dtype
        assert rel_error(out, ref) < tolerance(dtype), (channels, rel_error(out, ref))


# -- every family: its embed() through the shared stem ---------------------------------------------------------------
def band_variant(name: str, channels: int) -> tuple[slimkern.SlimModel, dict] | None:
    """A small float64 model of ``name``'s family that takes ``channels`` bands and the run() inputs it needs, or
    None where the architecture fixes the band count (CROMA: 12 optical / 2 radar)."""
    cfg = get_cfg(name)
    fields = {f.name for f in dataclasses.fields(cfg.arch)}
    arch = {"depth": 1, "dim": 64, "num_heads": 2}
    if "channel_embed" in fields:
        arch["channel_embed"] = 32
    if "attn_dim" in fields:  # Panopticon's channel-attention width
        arch["attn_dim"] = 64
    inputs = dict(INPUTS.get(name, {}))
    if "wavelengths" in cfg.model_cls.extra_inputs:
        if cfg.family == "copernicus_fm":  # nanometres, with bandwidths
            inputs["wavelengths"] = torch.linspace(440.0, 2190.0, channels).tolist()
            inputs["bandwidths"] = torch.linspace(15.0, 180.0, channels).tolist()
        else:  # micrometres
            inputs["wavelengths"] = torch.linspace(0.44, 2.19, channels).tolist()
        spec = cfg.spec
    elif "in_chans" in fields:
        arch["in_chans"] = channels
        if "channel_groups" in fields:  # SatMAE: up to three groups of consecutive bands
            arch["channel_groups"] = tuple(tuple(g.tolist()) for g in torch.arange(channels).chunk(3))
        stats = None if cfg.spec.mean is None else (0.0,) * channels
        spec = dataclasses.replace(cfg.spec, bands=tuple(f"band{i}" for i in range(channels)), mean=stats,
                                   std=stats and (1.0,) * channels, band_sets=())
    else:
        return None
    cfg = dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, **arch), spec=spec)
    model = cfg.model_cls(cfg)
    model.to_empty(device="cpu")
    model.init_random(torch.Generator().manual_seed(0))
    return model.double().eval(), inputs


# one model per distinct stem (class and patch size)
STEMS = sorted({(get_cfg(n).model_cls.__name__, get_cfg(n).arch.patch_size): n for n in CANONICAL}.values())


def embed_in(model: slimkern.SlimModel, dtype: torch.dtype, x: torch.Tensor, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).to(dtype).embed(x.to(dtype), **inputs)


@pytest.mark.parametrize("name", STEMS)
def test_family_stems_in_low_precision_against_float64(name):
    counts = CHANNELS if band_variant(name, 3) is not None else ()
    for channels in counts:
        model, inputs = band_variant(name, channels)
        p = model.cfg.arch.patch_size
        x = torch.randn(2, channels, 2 * p, 3 * p, dtype=torch.float64)
        with torch.no_grad():
            ref = model.embed(x, **inputs)
        for dtype in LOW:
            assert rel_error(embed_in(model, dtype, x, inputs), ref) < tolerance(dtype), (channels, dtype)
    if not counts:  # fixed band sets (CROMA): each one its model takes
        model = small_model(name, "torch").double()
        p = model.cfg.arch.patch_size
        for channels in (12, 2):
            x = torch.randn(2, channels, 2 * p, 3 * p, dtype=torch.float64)
            ref = embed_in(model, torch.float64, x, {})
            for dtype in LOW:
                assert rel_error(embed_in(model, dtype, x, {}), ref) < tolerance(dtype), (channels, dtype)


@pytest.mark.parametrize("name", CANONICAL)
def test_family_stem_equals_conv_in_float64(name, monkeypatch):
    """Each family's embed() through the GEMM equals the same embed() through the convolution, at its real band
    count, and goes through the shared stem (the conv twin must be called)."""
    model = small_model(name, "torch").double()
    inputs = INPUTS.get(name, {})
    p = model.cfg.arch.patch_size
    bands = len(inputs["wavelengths"]) if "wavelengths" in inputs else len(model.cfg.bands)
    x = torch.randn(2, bands, 2 * p, 3 * p, dtype=torch.float64)
    calls = []

    def twin(*args, **kwargs):
        calls.append(1)
        return conv_patch_embed(*args, **kwargs)

    for modality in ([x[:, :12], x[:, 12:]] if name.startswith("croma") else [x]):
        with torch.no_grad():
            gemm = model.embed(modality, **inputs)
        calls.clear()
        with monkeypatch.context() as patch:
            for module in list(sys.modules.values()):  # every family module that imported the shared stem
                if getattr(module, "__name__", "").startswith("slimkern.zoo.") and module is not stem and \
                        getattr(module, "patch_embed", None) is stem.patch_embed:
                    patch.setattr(module, "patch_embed", twin)
            with torch.no_grad():
                conv = model.embed(modality, **inputs)
        assert calls, f"{name}: embed() does not use slimkern.zoo.stem.patch_embed"
        assert (gemm - conv).abs().max().item() <= 1e-12


# -- no convolution runs in a CPU forward -----------------------------------------------------------------------------
def convolutions(fn) -> set[str]:
    with OpRecorder() as recorder:
        fn()
    return {op for op in recorder.ops if "conv" in op and "convert" not in op}


def test_recorder_sees_a_convolution():
    x, weight = torch.randn(1, 4, 16, 16), torch.randn(8, 4, 8, 8)
    assert "convolution" in convolutions(lambda: F.conv2d(x, weight, stride=8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", CANONICAL)
def test_cpu_forward_runs_no_convolution(name, dtype):
    model = small_model(name, "torch").to(dtype)
    inputs = INPUTS.get(name, {})
    bands = len(inputs["wavelengths"]) if "wavelengths" in inputs else len(model.cfg.bands)
    size = model.cfg.arch.img_size
    x = torch.randn(2, bands, size, size, dtype=dtype)
    assert not convolutions(lambda: model.run(x, 0.5, **inputs))
    assert not convolutions(lambda: model.reference(x, 0.5, **inputs))
