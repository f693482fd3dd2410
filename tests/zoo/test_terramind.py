"""TerraMind v1 S2-L2A encoder: registry facts, the official checkpoint layout, slimmed runs vs the reference,
FLOPs, input errors, and width-1.0 equivalence with an independent forward.

TerraTorch (the official implementation) is not installed, so ``official_forward`` below is written in
float64 from a re-reading of TerraTorch's code (IBM/terratorch ``terratorch/models/backbones/terramind/``:
``encoder_embeddings.py::ImageEncoderEmbedding``, ``tm_utils.py::{build_2d_sincos_posemb, interpolate_pos_encoding,
Block, Attention, GatedMlp, LayerNorm}``, ``terramind_vit.py::TerraMindViT.forward``), taking its weights from
the synthesised official state dict and sharing no code with slimkern.
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import slimkern
import slimkern.zoo.terramind  # noqa: F401  (registers the models)
from slimkern.api import build_meta
from slimkern.checkpoints import CheckpointError
from slimkern.registry import get_cfg
from tests.helpers import TINY, rel_error, tiny_model

NAME = "terramind_base"
EMB = "encoder_embeddings.untok_sen2l2a@224."
S2L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def official_keys(state: dict) -> dict:
    """slimkern keys -> TerraMind's (``blocks.i`` -> ``encoder.i``, ``norm`` -> ``encoder_norm``)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            key = "encoder." + key.removeprefix("blocks.")
        elif key.startswith("norm."):
            key = "encoder_norm." + key.removeprefix("norm.")
        renamed[key] = value.clone()
    return renamed


def full_4m_file(encoder: dict, dim: int) -> dict:
    """What ``TerraMind_v1_*.pt`` holds: the flat state dict of the whole 4M model (``terramind.py::TerraMind``),
    i.e. the encoder plus every other modality's encoder embedding and the decoder (zero-valued here)."""
    state = dict(encoder)

    def z(*shape):  # zero views of one element: the exact shapes, without writing megabytes of vocabulary tables
        return torch.zeros(()).expand(*shape)

    for mod, chans in (("untok_sen2l1c@224", 13), ("untok_sen2rgb@224", 3), ("untok_sen1grd@224", 2),
                       ("untok_sen1rtc@224", 2), ("untok_dem@224", 1)):
        state.update({f"encoder_embeddings.{mod}.proj.weight": z(dim, chans * 256),
                      f"encoder_embeddings.{mod}.pos_emb": z(1, 196, dim),
                      f"encoder_embeddings.{mod}.mod_emb": z(1, 1, dim)})
    for mod, vocab in (("tok_sen2l2a@224", 15360), ("tok_lulc@224", 4375)):
        for side in ("encoder", "decoder"):
            state.update({f"{side}_embeddings.{mod}.pos_emb": z(1, 196, dim),
                          f"{side}_embeddings.{mod}.mod_emb": z(1, 1, dim),
                          f"{side}_embeddings.{mod}.token_emb.weight": z(vocab, dim)})
        state[f"decoder_embeddings.{mod}.to_logits.weight"] = state[f"decoder_embeddings.{mod}.token_emb.weight"]
    state.update({"encoder_embeddings.coords.pos_emb": z(1, 256, dim),
                  "encoder_embeddings.coords.mod_emb": z(1, 1, dim),
                  "encoder_embeddings.coords.token_emb.weight": z(30000, dim)})
    hidden = int(2 * 4 * dim / 3)
    for i in range(2):  # DecoderBlock: self- and cross-attention, query/context norms, gated MLP
        pre = f"decoder.{i}."
        for norm in ("norm1", "query_norm", "context_norm", "norm2"):
            state.update({pre + f"{norm}.weight": z(dim), pre + f"{norm}.bias": z(dim)})
        state.update({pre + "self_attn.qkv.weight": z(3 * dim, dim), pre + "self_attn.proj.weight": z(dim, dim),
                      pre + "cross_attn.q.weight": z(dim, dim), pre + "cross_attn.kv.weight": z(2 * dim, dim),
                      pre + "cross_attn.proj.weight": z(dim, dim), pre + "mlp.fc1.weight": z(hidden, dim),
                      pre + "mlp.fc3.weight": z(hidden, dim), pre + "mlp.fc2.weight": z(dim, hidden)})
    state.update({"decoder_norm.weight": z(dim), "decoder_norm.bias": z(dim),
                  "decoder_proj_context.weight": z(dim, dim), "decoder_proj_context.bias": z(dim),
                  "mask_token": z(1, 1, dim)})
    return state


def official_sincos(h: int, w: int, dim: int) -> torch.Tensor:
    """``build_2d_sincos_posemb(h, w, dim)`` in float64: meshgrid(w, h, 'ij') flattened, [sin w|cos w|sin h|cos h]."""
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64),
                                    indexing="ij")
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    out_w, out_h = torch.outer(grid_w.reshape(-1), omega), torch.outer(grid_h.reshape(-1), omega)
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]


def official_forward(state: dict, x: torch.Tensor, num_heads: int, eps: float = 1e-6) -> torch.Tensor:
    """TerraMindViT.forward on one S2L2A input, float64: the last (encoder-normed) output ``[B, N, D]``."""
    rearrange = pytest.importorskip("einops").rearrange
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    proj = s[EMB + "proj.weight"]
    dim, (b, c, h, w) = proj.shape[0], x.shape
    p = math.isqrt(proj.shape[1] // c)
    tokens = rearrange(x, "b d (nh ph) (nw pw) -> b (nh nw) (ph pw d)", ph=p, pw=p) @ proj.T
    pos, g = s[EMB + "pos_emb"], math.isqrt(s[EMB + "pos_emb"].shape[1])
    if (h // p, w // p) != (g, g):  # interpolate_pos_encoding
        pos = pos.reshape(1, g, g, dim).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h // p, w // p), mode="bicubic", align_corners=False)
        pos = pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    t = tokens + (pos + s[EMB + "mod_emb"])
    n, hd = t.shape[1], dim // num_heads
    depth = sum(k.startswith("encoder.") and k.endswith(".norm1.weight") for k in s)
    for i in range(depth):
        pre = f"encoder.{i}."
        y = F.layer_norm(t, (dim,), s[pre + "norm1.weight"], s[pre + "norm1.bias"], eps)
        q, k, v = (y @ s[pre + "attn.qkv.weight"].T).reshape(b, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * hd**-0.5).softmax(dim=-1)
        t = t + (attn @ v).transpose(1, 2).reshape(b, n, dim) @ s[pre + "attn.proj.weight"].T
        y = F.layer_norm(t, (dim,), s[pre + "norm2.weight"], s[pre + "norm2.bias"], eps)
        gate, value = F.silu(y @ s[pre + "mlp.fc1.weight"].T), y @ s[pre + "mlp.fc3.weight"].T
        t = t + (gate * value) @ s[pre + "mlp.fc2.weight"].T
    return F.layer_norm(t, (dim,), s["encoder_norm.weight"], s["encoder_norm.bias"], eps)


def load(weights, **kwargs):
    return slimkern.load(NAME, weights=weights, **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def source():
    """A tiny TerraMind with random weights and its encoder weights under the official keys."""
    model = tiny_model(NAME)
    return model, official_keys(model.state_dict())


# -- registry ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "alias", "dims"), [("terramind_base", "terramind_v1_base", (768, 12, 12, 2048)),
                                                     ("terramind_large", "terramind_v1_large", (1024, 24, 16, 2730))])
def test_registered_cfg(name, alias, dims):
    cfg = get_cfg(name)
    assert get_cfg(alias) is cfg
    arch, spec = cfg.arch, cfg.arch.block_spec()
    assert (arch.dim, arch.depth, arch.num_heads, spec.mlp_hidden) == dims  # GatedMlp: int(2 * 4D / 3)
    assert (arch.img_size, arch.patch_size, arch.in_chans, arch.norm_eps) == (224, 16, 12, 1e-6)
    assert (spec.qkv_bias, spec.proj_bias, spec.mlp_bias, spec.ffn, spec.layer_scale) == (False, False, False,
                                                                                          "swiglu", False)
    assert cfg.bands == S2L2A_BANDS
    assert cfg.mean[0] == 1390.458 and cfg.std[-1] == 1334.311 and len(cfg.mean) == len(cfg.std) == 12
    assert cfg.checkpoint.container_keys == ()
    assert cfg.weights_url.endswith(f"TerraMind-1.0-{name.split('_')[1]}/resolve/main/TerraMind_v1_"
                                    f"{name.split('_')[1]}.pt")


@pytest.mark.parametrize(("name", "dim", "depth", "hidden"), [("terramind_base", 768, 12, 2048),
                                                              ("terramind_large", 1024, 24, 2730)])
def test_parameter_count(name, dim, depth, hidden):
    # model_specs.json has no TerraMind entry: count from the official modules. Per block: bias-free qkv, proj,
    # fc1, fc3, fc2 and two LayerNorms (weight + zero "bias" buffer); final norm; patch proj [D, 12*16*16];
    # mod_emb; the 14x14 pos_emb buffer. (Trainable only: minus 196*D and the (2*depth+1)*D bias buffers.)
    per_block = 4 * dim * dim + 3 * dim * hidden + 4 * dim
    expected = depth * per_block + 2 * dim + dim * 12 * 256 + dim + 196 * dim
    assert sum(p.numel() for p in build_meta(name).parameters()) == expected
    assert expected == {"terramind_base": 87_483_648, "terramind_large": 305_388_544}[name]


def test_normalize_uses_v1_statistics(source):
    model, _ = source
    x = torch.full((1, 12, 16, 16), 1000.0)
    out = model.normalize(x)
    assert out[0, 0, 0, 0].item() == pytest.approx((1000.0 - 1390.458) / 2106.761)
    assert out[0, 11, 0, 0].item() == pytest.approx((1000.0 - 1857.648) / 1334.311)


# -- checkpoints ------------------------------------------------------------------------------------------------
def test_official_file_round_trip(tmp_path, source):
    model, official = source
    path = tmp_path / "TerraMind_v1_base.pt"
    torch.save(full_4m_file(official, model.dim), path)
    loaded = load(path)
    state = loaded.state_dict()
    assert set(state) == {k for k in model.state_dict()}  # decoder and other modalities dropped
    for key, value in official_keys(state).items():
        assert torch.equal(value, official[key]), key
    x = torch.randn(1, 12, 224, 224)
    for width in (1.0, 0.1):
        assert rel_error(loaded.run(x, width), model.run(x, width)) == 0.0


def test_missing_fixed_buffers_are_filled(source):
    model, official = source
    lean = {k: v for k, v in official.items() if not (k.endswith("pos_emb") or k.endswith("norm1.bias")
                                                       or k.endswith("norm2.bias") or k == "encoder_norm.bias")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(lean)
    pos = loaded.encoder_embeddings["untok_sen2l2a@224"].pos_emb
    torch.testing.assert_close(pos.double(), official_sincos(14, 14, 128), rtol=0, atol=1e-6)
    assert not loaded.blocks[1].norm2.bias.any() and not loaded.norm.bias.any()


def test_pos_emb_for_another_img_size_is_recomputed(source):
    _, official = source
    loaded = load(official, img_size=64)  # TerraTorch skips the mis-shaped stored table for its own 4x4 one
    pos = loaded.encoder_embeddings["untok_sen2l2a@224"].pos_emb
    torch.testing.assert_close(pos.double(), official_sincos(4, 4, 128), rtol=0, atol=1e-6)


def test_missing_and_unexpected_encoder_keys(source):
    _, official = source
    broken = {k: v for k, v in official.items() if k != "encoder.1.mlp.fc3.weight"}
    with pytest.raises(CheckpointError, match=r"1 missing keys: blocks\.1\.mlp\.fc3\.weight"):
        load(broken)
    with pytest.raises(CheckpointError, match=r"unexpected keys: head\.weight"):
        load(dict(official, **{"head.weight": torch.randn(10, 128)}))


# -- slimmed runs, FLOPs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [1.0, 0.5, 0.1, 0.001])
def test_widths_and_modes_match_reference(source, width):
    model, _ = source
    x = torch.randn(1, 12, 224, 224)
    for mode in ("attn+ffn", "attn", "ffn"):
        assert rel_error(model.run(x, width, mode=mode, output="tokens"),
                         model.reference(x, width, mode=mode, output="tokens")) < 1e-5
    assert rel_error(model.run(x, width), model.reference(x, width)) < 1e-5  # the token mean


@pytest.mark.parametrize("mode", ["attn+ffn", "attn", "ffn"])
@pytest.mark.parametrize(("width", "size"), [(1.0, (224, 224)), (0.5, (224, 224)), (0.1, (96, 160)),
                                             (0.001, (224, 224))])
def test_flops_match_flop_counter(source, width, size, mode):
    model, _ = source
    with FlopCounterMode(display=False) as counter:
        model.reference(torch.randn(1, 12, *size), width, mode=mode)
    assert model.flops(width, mode=mode, image_size=size) == pytest.approx(counter.get_total_flops(), rel=0.01)


@pytest.mark.parametrize(("name", "gflops", "rel_at_01"), [("terramind_base", 35.8, 0.121),
                                                           ("terramind_large", 124.0, 0.107)])
def test_full_size_compute(name, gflops, rel_at_01):
    # docs/slimming.md (Compute): ViT-B/16 (L/16) at 224 px, 12 bands: 35.8 (124.0) GFLOP, s = 0.1 -> ~12.1 (10.7) %.
    # TerraMind has 196 tokens (no class token) and a SwiGLU FFN with as many MACs as the 4D GELU one.
    model = build_meta(name)
    arch = model.cfg.arch
    d, n, h = arch.dim, 196, arch.block_spec().mlp_hidden
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 3 * 2 * n * d * h
    assert model.flops() == arch.depth * block + 2 * n * 12 * 256 * d
    assert model.flops() / 1e9 == pytest.approx(gflops, rel=0.01)
    assert model.relative_flops(0.1) == pytest.approx(rel_at_01, abs=0.002)
    rel = [model.relative_flops(w) for w in (1.0, 0.5, 0.25, 0.1, 0.001)]
    stem_share = 2 * n * 12 * 256 * d / model.flops()  # the unslimmed stem sets the floor
    assert rel[0] == 1.0 and rel == sorted(rel, reverse=True) and stem_share < rel[-1] < stem_share + 0.01
    assert 0.62 < model.relative_flops(0.001, mode="attn") < 0.72
    assert 0.30 < model.relative_flops(0.001, mode="ffn") < 0.40


# -- bad inputs -------------------------------------------------------------------------------------------------
def test_bad_inputs(source):
    model, _ = source
    with pytest.raises(ValueError, match=r"x has 13 bands .* expected 12 in this order: B01, B02, .*, B11, B12"):
        model.run(torch.randn(1, 13, 224, 224))
    with pytest.raises(ValueError, match=r"image size 224x200 is not a positive multiple of the patch size 16"):
        model.run(torch.randn(1, 12, 224, 200))
    with pytest.raises(ValueError, match=r"image size 8x8 is not a positive multiple"):
        model.flops(image_size=8)
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected wavelengths"):
        model.run(torch.randn(1, 12, 224, 224), wavelengths=[0.49] * 12)


# -- width 1.0 against the official formulas ----------------------------------------------------------------------
def test_sincos_table_is_rows_first(source):
    model, _ = source
    table = official_sincos(14, 14, 128)
    torch.testing.assert_close(model.encoder_embeddings["untok_sen2l2a@224"].pos_emb.double(), table,
                               rtol=0, atol=1e-6)
    omega = 1.0 / 10000.0 ** (torch.arange(32, dtype=torch.float64) / 32)
    token = 1 * 14 + 4  # row 1, column 4
    torch.testing.assert_close(table[0, token, :32], torch.sin(1 * omega))
    torch.testing.assert_close(table[0, token, 64:96], torch.sin(4 * omega))


@pytest.mark.parametrize("size", [(224, 224), (96, 160)])
def test_width_one_matches_official_forward(source, size):
    model, official = source
    # a perturbed stored table: the file's pos_emb must be the one used (and interpolated), not a recomputed one
    official = dict(official, **{EMB + "pos_emb": official[EMB + "pos_emb"] + 0.05 * torch.randn(1, 196, 128)})
    x = torch.randn(2, 12, *size)
    want = official_forward(official, x, num_heads=2)
    fp64 = load(full_4m_file(official, 128), dtype=torch.float64)
    assert rel_error(fp64.run(x.double(), output="tokens"), want) < 1e-12
    assert rel_error(fp64.run(x.double()), want.mean(dim=1)) < 1e-12
    fp32 = load(official)
    assert rel_error(fp32.run(x, output="tokens"), want) < 1e-5
    assert rel_error(model.run(x, output="tokens"), want) > 1e-3  # the perturbation is visible
