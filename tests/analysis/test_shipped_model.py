"""The shipped demo model and sample: loadable through the normal path, trained, no training image in the sample."""

import json

import numpy as np
import pytest

import slimkern
from slimkern.analysis.command import DEMO_DATA
from slimkern.analysis.datasets import class_folder_dataset, model_batches
from slimkern.analysis.probes import knn_metric
from slimkern.zoo.eurosat_vit import WEIGHTS


@pytest.fixture(scope="module")
def model():
    return slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)


def test_sweep_sample_is_drawn_from_the_held_out_split_only():
    split = json.loads(WEIGHTS.with_name("vit_tiny_eurosat_split.json").read_text())
    held_out = set(split["held_out"])
    assert len(held_out) == 1000
    sample = {f"{p.parent.name}/{p.name}" for p in DEMO_DATA.glob("*/*.jpg")}
    assert len(sample) == 500 and sample <= held_out


def test_shipped_weights_give_useful_features(model):
    data = class_folder_dataset(DEMO_DATA)
    pick = np.concatenate([np.flatnonzero(data.labels == c)[:20] for c in range(10)])  # 20 per class
    feats = np.concatenate([model.run(b.x).numpy() for b in model_batches(data, model, 100, indices=pick)])
    labels = data.labels[pick]
    train = np.arange(len(pick)) % 4 != 0  # 15 train / 5 test images per class
    # chance is 0.1; the trained encoder separates EuroSAT classes far better
    assert knn_metric(feats[train], labels[train], feats[~train], labels[~train]) > 0.6
