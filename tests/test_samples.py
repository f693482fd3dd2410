import torch

from slimkern.samples import eurosat_sample


def test_eurosat_sample_is_real_rgb_in_unit_range():
    images, classes = eurosat_sample(size=96)
    assert images.shape == (10, 3, 96, 96) and len(set(classes)) == 10
    assert 0.0 <= images.min() and images.max() <= 1.0
    # real imagery: bands differ and images differ (a blank or constant file would not)
    assert images.std(dim=(0, 2, 3)).min() > 0.02 and not torch.allclose(images[0], images[1])
