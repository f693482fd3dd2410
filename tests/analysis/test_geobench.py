"""The GEO-Bench reader against a stand-in of the ``geobench`` API it uses (the real package and data are
not installed here): ``task_iterator``, ``task.get_dataset(split=...)``, ``sample.pack_to_3d`` and ``label``."""

import sys
import types

import numpy as np
import pytest

from slimkern.analysis.datasets import DataError, geobench_dataset


class _Sample:
    def __init__(self, value: float, label):
        self.label = label
        self._value = value

    def pack_to_3d(self, band_names=None):
        bands = list(band_names or ("red", "green", "blue", "nir"))
        array = np.full((4, 5, len(bands)), self._value, dtype=np.float32)  # [H, W, C], as geobench returns
        array[..., 0] += 1
        return array, bands


def _fake_geobench(multilabel: bool):
    labels = {"train": [0, 1, 1], "test": [1, 0]}
    if multilabel:
        labels = {k: [np.eye(3, dtype=int)[c] | np.eye(3, dtype=int)[2] for c in v] for k, v in labels.items()}
    label_type = types.SimpleNamespace(**({"class_name": ["a", "b", "c"]} if multilabel else
                                          {"class_names": ["a", "b"]}))
    task = types.SimpleNamespace(
        dataset_name="m-toy", label_type=label_type,
        get_dataset=lambda split: [_Sample(10.0 * i, lab) for i, lab in enumerate(labels[split])])
    return types.SimpleNamespace(task_iterator=lambda benchmark_name: iter([task]))


@pytest.mark.parametrize("multilabel", [False, True])
def test_geobench_task_keeps_its_split_labels_and_band_layout(monkeypatch, multilabel):
    monkeypatch.setitem(sys.modules, "geobench", _fake_geobench(multilabel))
    data = geobench_dataset("m-toy", band_names=["red", "green", "blue"])
    assert len(data) == 5 and data.items == ["train/0", "train/1", "train/2", "test/0", "test/1"]
    assert data.test_mask.tolist() == [False, False, False, True, True]
    assert data.multilabel is multilabel
    if multilabel:
        assert data.classes == ("a", "b", "c") and data.labels[0].tolist() == [1, 0, 1]
    else:
        assert data.classes == ("a", "b") and data.labels.tolist() == [0, 1, 1, 1, 0]
    image = data.read(4)  # test sample 1: value 10, band 0 plus 1
    assert image.shape == (3, 4, 5) and image[0, 0, 0] == 11.0 and image[1, 0, 0] == 10.0


def test_geobench_unknown_task_and_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "geobench", _fake_geobench(False))
    with pytest.raises(DataError, match=r"'m-nope' not found .* available: m-toy"):
        geobench_dataset("m-nope")
    monkeypatch.setitem(sys.modules, "geobench", None)  # import geobench -> ImportError
    with pytest.raises(DataError, match="need the 'geobench' package"):
        geobench_dataset("m-eurosat")
