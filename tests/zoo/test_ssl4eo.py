"""SSL4EO-S12 ViT-S/16 (MoCo-v3, DINO, MAE): official containers, slimmed runs, FLOPs, bad inputs, and
width 1.0 against torchgeo's builder (timm ``vit_small_patch16_224``, ``in_chans=13``)."""

import argparse
import math
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import slimkern
from slimkern.api import build_meta
from tests.helpers import TINY, rel_error, tiny_model
from tests.zoo._torchgeo import torchgeo_models

NAMES = ("ssl4eo_vits16_moco", "ssl4eo_vits16_dino", "ssl4eo_vits16_mae")
WIDTHS = (1.0, 0.5, 0.1, 0.001)


@pytest.fixture(scope="module")
def models():
    return {name: tiny_model(name) for name in NAMES}


def images(size: int = 224, batch: int = 2) -> torch.Tensor:
    # L1C / 10000 lies in about [0, 1]; keep the values image-like rather than zero-centred
    return torch.rand(batch, 13, size, size) * 0.6


def load(name: str, weights, **kwargs) -> slimkern.SlimModel:
    return slimkern.load(name, weights=weights, **{**TINY, **kwargs})


def noisy(state: dict) -> dict:
    """Same keys and shapes, other values (for the parts of a container that must NOT be loaded)."""
    return {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


# -- official containers -------------------------------------------------------------------------------


def moco_container(state: dict) -> dict:
    """MoCo-v3 ``main_moco.py`` checkpoint: DDP-wrapped base/momentum encoders (with projection heads) and
    predictor under 'state_dict'."""
    head = {"head.0.weight": torch.randn(64, 128), "head.1.weight": torch.randn(64),
            "head.1.running_mean": torch.randn(64), "head.1.num_batches_tracked": torch.tensor(7),
            "head.3.weight": torch.randn(32, 64)}
    base = {**state, **head}
    weights = {f"module.base_encoder.{k}": v for k, v in base.items()}
    weights |= {f"module.momentum_encoder.{k}": v for k, v in noisy(base).items()}
    weights |= {"module.predictor.0.weight": torch.randn(64, 32), "module.predictor.3.weight": torch.randn(32, 64)}
    return {"epoch": 100, "arch": "vit_small", "state_dict": weights,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4}]}, "scaler": {"scale": 65536.0}}


def dino_container(state: dict) -> dict:
    """DINO ``main_dino.py`` checkpoint: DDP student ('module.backbone.*') and plain teacher ('backbone.*'),
    each with the DINO head."""
    head = {"head.mlp.0.weight": torch.randn(64, 128), "head.mlp.4.weight": torch.randn(16, 64),
            "head.last_layer.weight_g": torch.randn(256, 1), "head.last_layer.weight_v": torch.randn(256, 16)}
    teacher = {f"backbone.{k}": v for k, v in state.items()} | head
    student = {f"module.backbone.{k}": v for k, v in noisy(state).items()} | {f"module.{k}": v for k, v in head.items()}
    return {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
            "args": argparse.Namespace(arch="vit_small", patch_size=16), "dino_loss": {"center": torch.randn(1, 256)}}


def mae_container(state: dict) -> dict:
    """MAE ``misc.save_model`` checkpoint: encoder + decoder under 'model'."""
    model = dict(state)
    model["mask_token"] = torch.randn(1, 1, 64)
    model["decoder_pos_embed"] = torch.randn(1, 197, 64)
    model["decoder_embed.weight"] = torch.randn(64, 128)
    model["decoder_blocks.0.attn.qkv.weight"] = torch.randn(192, 64)
    model["decoder_pred.weight"] = torch.randn(16 * 16 * 13, 64)
    return {"model": model, "optimizer": {"state": {}}, "epoch": 99, "scaler": {"scale": 1024.0},
            "args": argparse.Namespace(model="mae_vit_small_patch16", in_chans=13)}


CONTAINERS = {"ssl4eo_vits16_moco": moco_container, "ssl4eo_vits16_dino": dino_container,
              "ssl4eo_vits16_mae": mae_container}


@pytest.mark.parametrize("name", NAMES)
def test_official_container_round_trip(tmp_path, models, name):
    source = models[name]
    state = source.state_dict()
    path = tmp_path / "checkpoint.pth"
    torch.save(CONTAINERS[name](state), path)
    loaded = load(name, path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key  # the encoder (teacher / base encoder), nothing else
    x = images(batch=1)
    assert torch.equal(loaded.run(x, 0.1), source.run(x, 0.1))


@pytest.mark.parametrize("name", NAMES)
def test_torchgeo_flat_file(tmp_path, models, name):
    # torchgeo's re-packaged files are flat timm state dicts; its loader tolerates extra head.* keys
    state = models[name].state_dict()
    path = tmp_path / "vit_small_patch16_224_sentinel2_all.pth"
    torch.save(state | {"head.weight": torch.randn(1000, 128), "head.bias": torch.randn(1000)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(name, path)
    x = images(batch=1)
    assert torch.equal(loaded.run(x, 0.5), models[name].run(x, 0.5))


def test_file_without_final_norm_gets_identity_norm_like_torchgeo(models):
    model = models["ssl4eo_vits16_mae"]
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("norm.")}
    with pytest.warns(UserWarning, match="no final norm .* identity-affine LayerNorm"):
        loaded = load("ssl4eo_vits16_mae", state)
    assert torch.equal(loaded.norm.weight, torch.ones(128)) and torch.equal(loaded.norm.bias, torch.zeros(128))
    # torchgeo: timm model (norm initialised to weight 1, bias 0) loaded with strict=False
    vit = torchgeo_vit(loaded, state)
    x = images(batch=1)
    with torch.no_grad():
        assert rel_error(loaded.run(x), vit.forward_head(vit.forward_features(x), pre_logits=True)) < 1e-5


def test_half_a_final_norm_is_an_error(models):
    state = {k: v for k, v in models["ssl4eo_vits16_moco"].state_dict().items() if k != "norm.bias"}
    with pytest.raises(ValueError, match=r"1 missing keys: norm\.bias"):
        load("ssl4eo_vits16_moco", state)


def test_dino_file_without_teacher_is_refused(models):
    # a DINO file without a teacher must not silently load the student
    state = models["ssl4eo_vits16_dino"].state_dict()
    container = dino_container(state)
    del container["teacher"]
    with pytest.raises(ValueError, match="expected the weights under one of \\['teacher'\\]"):
        load("ssl4eo_vits16_dino", container)


# -- slimmed runs against the reference ------------------------------------------------------------------


@pytest.mark.parametrize("name, mode", [(name, "attn+ffn") for name in NAMES]
                         + [("ssl4eo_vits16_dino", "attn"), ("ssl4eo_vits16_dino", "ffn")])
def test_engine_matches_reference(models, name, mode):
    model, x = models[name], images(batch=1)
    for width in WIDTHS:
        fast = model.run(x, width, mode=mode, output="tokens")
        assert fast.shape == (1, 197, 128)
        assert rel_error(fast, model.reference(x, width, mode=mode, output="tokens")) < 1e-5, width
    assert rel_error(model.run(x, 0.1, mode=mode), model.reference(x, 0.1, mode=mode)) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_other_image_size(models, name):
    model, x = models[name], images(160, batch=1)
    fast = model.run(x, 0.5, output="tokens")
    assert fast.shape == (1, 1 + 10 * 10, 128)
    assert rel_error(fast, model.reference(x, 0.5, output="tokens")) < 1e-5


# -- position embeddings against the official formulas ------------------------------------------------


def moco_sincos(dim: int, h: int, w: int) -> torch.Tensor:
    """MoCo-v3 ``build_2d_sincos_position_embedding``, written out as the official code does it (float64)."""
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64),
                                    indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(pos_dim, dtype=torch.float64) / pos_dim)
    out_w = grid_w.flatten()[:, None] * omega
    out_h = grid_h.flatten()[:, None] * omega
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table])[None]


def test_moco_positions_are_row_first_sincos(models):
    model = models["ssl4eo_vits16_moco"]
    torch.testing.assert_close(model.pos_embed, moco_sincos(128, 14, 14).float())
    torch.testing.assert_close(model.position_embedding((20, 20)), moco_sincos(128, 20, 20))
    # row first: token (r=1, c=0) differs from (r=0, c=1) in the first half of the table only
    table = moco_sincos(128, 3, 3)[0, 1:]
    assert torch.equal(table[3, 64:], table[0, 64:]) and not torch.equal(table[3, :64], table[0, :64])


def dino_interpolate(pos: torch.Tensor, size: int, patch: int) -> torch.Tensor:
    """DINO ``vision_transformer.py::interpolate_pos_encoding`` for a square image, as written there."""
    n = pos.shape[1] - 1
    w0 = h0 = size // patch + 0.1
    grid = pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])], dim=1)


def mae_interpolate(pos: torch.Tensor, size: int, patch: int) -> torch.Tensor:
    """MAE ``util/pos_embed.py::interpolate_pos_embed``: bicubic to the new grid size."""
    grid = pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(size // patch,) * 2, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


# -- width 1.0 against torchgeo -------------------------------------------------------------------------


def torchgeo_vit(model: slimkern.SlimModel, state: dict | None = None, img_size: int = 224):
    """torchgeo's ``vit_small_patch16_224`` (timm) with the model's sizes, fed the same state dict."""
    arch = model.cfg.arch
    vit = torchgeo_models().vit_small_patch16_224(None, in_chans=13, img_size=img_size, embed_dim=arch.dim,
                                                  depth=arch.depth, num_heads=arch.num_heads)
    missing, unexpected = vit.load_state_dict(model.state_dict() if state is None else state, strict=False)
    assert set(missing) <= {"head.weight", "head.bias", "norm.weight", "norm.bias"} and not unexpected
    return vit.eval()


@pytest.mark.parametrize("name", NAMES)
def test_full_width_equals_torchgeo(models, name):
    model, x = models[name], images()
    vit = torchgeo_vit(model).double()
    with torch.no_grad():
        tokens = vit.forward_features(x.double())
        pooled = vit.forward_head(tokens, pre_logits=True)
    assert rel_error(model.run(x, 1.0, output="tokens"), tokens) < 1e-5
    assert rel_error(model.run(x, 1.0), pooled) < 1e-5
    assert rel_error(model.reference(x, 1.0), pooled) < 1e-12


@pytest.mark.parametrize("name, positions", [
    ("ssl4eo_vits16_moco", lambda pos: moco_sincos(128, 20, 20)),
    ("ssl4eo_vits16_dino", lambda pos: dino_interpolate(pos, 320, 16)),
    ("ssl4eo_vits16_mae", lambda pos: mae_interpolate(pos, 320, 16)),
])
def test_full_width_equals_torchgeo_at_another_size(models, name, positions):
    # each method's own code at 320 px: MoCo recomputes its sin-cos table, DINO and MAE interpolate theirs
    model = models[name]
    state = model.state_dict()
    state["pos_embed"] = positions(state["pos_embed"].double()).float()
    vit = torchgeo_vit(model, state, img_size=320).double()
    x = images(320, batch=1)
    with torch.no_grad():
        want = vit.forward_head(vit.forward_features(x.double()), pre_logits=True)
    assert rel_error(model.run(x), want) < 1e-5


def test_dino_interpolation_is_not_plain_resampling(models):
    # the +0.1 offset changes the sampling positions: a size-based bicubic resample differs
    pos = models["ssl4eo_vits16_dino"].pos_embed.double()
    assert rel_error(dino_interpolate(pos, 320, 16), mae_interpolate(pos, 320, 16)) > 1e-3


# -- FLOPs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, width, size", [("attn+ffn", 1.0, 224), ("attn+ffn", 0.001, 224),
                                                ("attn", 0.1, 224), ("ffn", 0.5, 160)])
def test_flops_match_flop_counter(models, mode, width, size):
    model, x = models["ssl4eo_vits16_dino"], images(size, batch=1)
    with FlopCounterMode(display=False) as counter:
        model.reference(x, width, mode=mode)
    assert model.flops(width, mode=mode, image_size=size) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_full_size_compute_matches_paper_reference():
    # SLIMMING.md section 4: ViT-S/16 at 224 px with 12 bands is 9.5 GFLOP, and s = 0.1 gives ~14.1 %;
    # SSL4EO has 13 bands, one more band in the unslimmed stem (2 * 196 patches * 16 * 16 * 384)
    model = build_meta("ssl4eo_vits16_moco")
    band = 2 * 196 * 16 * 16 * 384
    assert (model.flops() - band) / 1e9 == pytest.approx(9.5, rel=0.01)
    assert (model.flops(0.1) - band) / (model.flops() - band) == pytest.approx(0.141, abs=0.002)
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.1, 0.001)]
    assert rel == sorted(rel, reverse=True) and 0.05 < rel[3] < 0.065  # the stem is ~5 % of a ViT-S
    # slimming one part alone has a floor (paper: ~65-69 % attention-only, ~34-37 % FFN-only; a ViT-S with
    # 197 tokens spends relatively more on attention, and its stem is a larger share)
    assert 0.60 < model.relative_flops(0.001, mode="attn") < 0.68
    assert 0.38 < model.relative_flops(0.001, mode="ffn") < 0.45


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameters_match_spec_and_timm(name):
    model = build_meta(name)
    assert sum(p.numel() for p in model.parameters()) == 22_648_704  # model_specs.json encoder_params
    with torch.device("meta"):
        vit = timm.create_model("vit_small_patch16_224", pretrained=False, in_chans=13, num_classes=0)
    assert {k: p.shape for k, p in model.named_parameters()} == {k: p.shape for k, p in vit.named_parameters()}


# -- registry and bad inputs ------------------------------------------------------------------------------


def test_registry_names_and_metadata():
    for name in NAMES:
        cfg = slimkern.registry.get_cfg(name)
        assert slimkern.registry.get_cfg(name.replace("ssl4eo_", "ssl4eo_s12_")) is cfg
        assert cfg.bands == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                             "B12")
        assert cfg.spec.scale == 1e-4 and cfg.spec.unit == "DN" and set(cfg.mean) == {0.0} and set(cfg.std) == {1.0}


def test_bad_inputs(models):
    model = models["ssl4eo_vits16_moco"]
    with pytest.raises(ValueError, match=r"x has 12 bands .* expected 13 in this order: B01, .*B8A, B09, B10"):
        model.run(torch.rand(1, 12, 224, 224))
    with pytest.raises(ValueError, match="image size 200x224 is not a positive multiple of the patch size 16"):
        model.run(torch.rand(1, 13, 200, 224))
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected wavelengths"):
        model.run(images(batch=1), wavelengths=[0.49] * 13)
