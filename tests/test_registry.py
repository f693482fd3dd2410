import pytest

import slimkern
from slimkern.registry import get_cfg


def test_satmae_is_registered_under_both_names():
    assert {"satmae", "satmae_vitl_rgb"} <= set(slimkern.list_models())
    assert get_cfg("satmae") is get_cfg("satmae_vitl_rgb")
    assert slimkern.list_models("satmae_vit*") == ["satmae_vitb_ms", "satmae_vitl_ms", "satmae_vitl_rgb"]


def test_satmae_cfg_matches_the_official_spec():
    cfg = get_cfg("satmae")
    arch = cfg.arch
    assert (arch.dim, arch.depth, arch.num_heads, arch.patch_size, arch.img_size) == (1024, 24, 16, 16, 224)
    assert arch.norm_eps == 1e-6 and arch.qkv_bias
    assert cfg.bands == ("R", "G", "B") and len(cfg.mean) == len(cfg.std) == 3
    assert cfg.checkpoint.container_keys == ("model",)


def test_satmae_parameter_count_matches_spec():
    model = slimkern.api.build_meta("satmae")
    assert sum(p.numel() for p in model.parameters()) == 303_301_632  # model_specs.json encoder_params


def test_unknown_name_type():
    with pytest.raises(TypeError, match="model name must be a string"):
        get_cfg(3)
