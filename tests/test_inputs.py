"""Every bad input gets a clear error naming what was wrong and what is expected."""

import pytest
import torch

import slimkern
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def x():
    return torch.randn(1, 3, 224, 224)


def test_wrong_band_count(model):
    with pytest.raises(ValueError, match=r"x has 4 bands .* expected 3 in this order: R, G, B"):
        model.run(torch.randn(1, 4, 224, 224))


def test_wrong_rank(model):
    with pytest.raises(ValueError, match=r"must be \[B, C, H, W\], got shape \(3, 224, 224\)"):
        model.run(torch.randn(3, 224, 224))


def test_not_a_tensor(model):
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model.run([[1.0]])


def test_image_size_not_multiple_of_patch(model):
    with pytest.raises(ValueError, match=r"image size 224x200 is not a positive multiple of the patch size 16"):
        model.run(torch.randn(1, 3, 224, 200))


def test_empty_batch(model):
    with pytest.raises(ValueError, match="empty batch"):
        model.run(torch.randn(0, 3, 224, 224))


@pytest.mark.parametrize("width", [0.0, 1.5, -1.0, float("nan")])
def test_width_out_of_range(model, x, width):
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
        model.run(x, width)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_input(model, x, bad):
    x[0, 1, 5, 7] = bad
    with pytest.raises(ValueError, match="x contains 1 NaN or Inf values"):
        model.run(x)


def test_wrong_dtype(model, x):
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model runs in torch.float32"):
        model.run(x.double())
    with pytest.raises(TypeError, match=r"x is torch.uint8"):
        model.run((x * 50).to(torch.uint8))


def test_wrong_device(model, x):
    with pytest.raises(ValueError, match=r"x is on meta but the model is on cpu"):
        model.run(x.to("meta"))


def test_unknown_mode_and_output(model, x):
    with pytest.raises(ValueError, match="unknown mode 'both'"):
        model.run(x, 0.5, mode="both")
    with pytest.raises(ValueError, match="unknown output 'cls'; expected one of 'pooled', 'tokens'"):
        model.run(x, 0.5, output="cls")


def test_unexpected_model_input(model, x):
    with pytest.raises(TypeError, match="takes no extra inputs; got unexpected wavelengths"):
        model.run(x, wavelengths=[0.665, 0.56, 0.49])


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'satmea'. Did you mean 'satmae'"):
        slimkern.load("satmea")


def test_load_arguments():
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        slimkern.load("satmae", dtype=torch.int8)
    with pytest.raises(TypeError, match=r"unknown architecture fields \['layers'\]"):
        slimkern.load("satmae", layers=2)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        slimkern.load("satmae", backend="tensorrt", **{"depth": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_cuda_without_gpu():
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
        slimkern.load("satmae", device="cuda")


def test_normalize(model):
    images = torch.rand(2, 3, 32, 32)
    out = model.normalize(images)
    mean = torch.tensor(model.cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images - mean) / std)
    with pytest.raises(ValueError, match="x has 1 bands"):
        model.normalize(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="normalize expects a floating-point tensor"):
        model.normalize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
