"""Probes and metrics against hand-computed cases."""

import numpy as np
import pytest

from slimkern.analysis.probes import knn_metric, linear_metric, macro_accuracy, macro_map, split_indices


def _on_circle(degrees, radius=1.0):
    rad = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1) * np.asarray(radius, dtype=float)[..., None]


def test_macro_accuracy_is_mean_per_class_recall():
    # class 0: 2 of 3 right, class 1: 1 of 1 right -> (2/3 + 1) / 2, not the plain accuracy 3/4
    assert macro_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 6)


def test_knn_votes_of_five_cosine_neighbours():
    # class 0 at 0..25 degrees, class 1 at 60..80 degrees; class-0 points far from the origin, so plain
    # Euclidean distances would differ from the cosine ranking the probe uses (L2-normalised features)
    train_x = np.concatenate([_on_circle([0, 5, 10, 15, 20, 25], radius=10.0), _on_circle([60, 65, 70, 75, 80])])
    train_y = np.array([0] * 6 + [1] * 5)
    # 44 deg: nearest 5 by angle are 60, 25, 65, 20, 70 -> votes 3:2 for class 1 (true 1: right)
    # 10 deg: all 5 neighbours class 0 (true 0: right); 85 deg: all class 1 (true 0: wrong)
    test_x = _on_circle([44, 10, 85], radius=[1.0, 3.0, 0.5])
    test_y = np.array([1, 0, 0])
    # recall class 0 = 1/2, class 1 = 1/1
    assert knn_metric(train_x, train_y, test_x, test_y) == pytest.approx(0.75)


def test_macro_map_hand_computed_and_skips_classes_without_positives():
    y_true = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.5], [0.3, 0.6, 0.5], [0.1, 0.2, 0.5]])
    # class 0 ranking +,-,+,- -> AP (1/1 + 2/3) / 2; class 1 ranking +,+ first -> AP 1; class 2 has no positives
    assert macro_map(y_true, scores) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_knn_multilabel_scores_are_neighbour_label_fractions():
    train_x = _on_circle([0, 2, 4, 6, 8, 82, 84, 86, 88, 90])
    train_y = np.array([[1, 0, 0]] * 5 + [[0, 1, 0]] * 4 + [[0, 1, 1]])
    test_x = _on_circle([3, 87, 45.5])
    # neighbours: 3 deg -> 0..8 -> scores [1, 0, 0]; 87 deg -> 82..90 -> [0, 1, 0.2];
    # 45.5 deg -> 82 (36.5 deg away), 8 (37.5), 84, 6, 86 -> [0.4, 0.6, 0]
    test_y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    # class 0: scores 1 (+), 0 (-), 0.4 (+) -> AP 1; class 1: 0 (-), 1 (+), 0.6 (+) -> AP 1;
    # class 2: 0 (+), 0.2 (-), 0 (-) -> the positive ties the last negative at the bottom: AP = 1/3
    expected = (1 + 1 + 1 / 3) / 3
    assert knn_metric(train_x, train_y, test_x, test_y) == pytest.approx(expected)


def test_linear_probe_separable_and_one_mislabelled_point():
    train_x = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    train_y = np.array([0, 0, 0, 1, 1, 1])
    test_x = np.array([[-0.5], [0.5], [4.0], [-4.0]])
    assert linear_metric(train_x, train_y, test_x, np.array([0, 1, 1, 0])) == pytest.approx(1.0)
    # the last point labelled 1 is predicted 0: recall class 0 = 1/1, class 1 = 2/3
    assert linear_metric(train_x, train_y, test_x, np.array([0, 1, 1, 1])) == pytest.approx(5 / 6)


def test_linear_probe_multilabel_separable_gives_map_one():
    train_x = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]] * 3)
    train_y = (train_x > 0).astype(int)  # class c present iff feature c > 0
    test_x = np.array([[-1.0, 1.5], [1.0, -0.5], [1.5, 1.0]])
    assert linear_metric(train_x, train_y, test_x, (test_x > 0).astype(int)) == pytest.approx(1.0)


def test_split_is_stratified_seeded_and_keeps_a_fixed_split():
    labels = np.repeat(np.arange(3), 10)
    train, test = split_indices(labels, seed=0)
    assert len(test) == 6 and np.bincount(labels[test]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(30))
    assert not np.array_equal(test, split_indices(labels, seed=1)[1])
    assert np.array_equal(test, split_indices(labels, seed=0)[1])
    mask = np.arange(30) >= 25
    assert split_indices(labels, seed=3, test_mask=mask)[1].tolist() == [25, 26, 27, 28, 29]


def test_too_few_images_are_clear_errors():
    x = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match=r"k-NN probe \(k = 5\) needs at least 5 training images, the train "
                                         r"split has 4"):
        knn_metric(x[:4], np.array([0, 0, 1, 1]), x[4:], np.array([0, 1]))
    # a class of one image cannot be split stratified: the message names the seed and the class
    with pytest.raises(ValueError, match=r"cannot split 7 images into train and test for seed 0: .*only 1 member"):
        split_indices(np.array([0, 0, 0, 1, 1, 1, 2]), seed=0)
