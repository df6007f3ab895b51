"""Affinities, segmentation, metrics and synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from em_volume.segment import affinities_to_segmentation, labels_to_affinities, waterz_available, widen_border
from em_volume.synth import SynthConfig, make_volume
from zoo.errors import InputError
from zoo.metrics.volume import adapted_rand_error, segmentation_scores, variation_of_information

SMALL = SynthConfig(shape=(8, 64, 64))


def test_affinity_channels_link_to_the_previous_voxel_along_z_y_x():
    labels = torch.ones(1, 2, 3, 4, dtype=torch.int64)
    labels[..., 2:] = 2  # a boundary between x = 1 and x = 2
    affs = labels_to_affinities(labels)[0]
    assert affs.shape == (3, 2, 3, 4)
    assert (affs[0, 0] == 0).all() and (affs[0, 1] == 1).all()  # z: first plane has no neighbour
    assert (affs[1, :, 0] == 0).all() and (affs[1, :, 1:] == 1).all()
    assert affs[2, 0, 0].tolist() == [0, 1, 0, 1]  # x: none, same, new label, same


def test_background_voxels_have_zero_affinity():
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    assert labels_to_affinities(labels).sum() == 0


def test_widen_border_zeroes_voxels_next_to_another_label():
    labels = np.ones((1, 5, 6), np.int64)
    labels[:, :, 3:] = 2
    widened = widen_border(labels)
    assert (widened[0, :, 2:4] == 0).all() and (widened[0, :, :2] == 1).all() and (widened[0, :, 4:] == 2).all()


def test_metrics_are_zero_for_a_perfect_segmentation():
    gt = np.array([[1, 1, 2, 2]])
    assert segmentation_scores(gt, gt * 7) == {"voi_split": 0.0, "voi_merge": 0.0, "voi": 0.0, "arand": 0.0}


def test_splitting_an_object_in_halves_costs_one_bit_of_split():
    gt = np.array([[1, 1, 1, 1]])
    voi = variation_of_information(gt, np.array([[1, 1, 2, 2]]))
    assert voi["voi_split"] == pytest.approx(1.0) and voi["voi_merge"] == pytest.approx(0.0)


def test_merging_two_equal_objects_costs_one_bit_of_merge():
    gt = np.array([[1, 1, 2, 2]])
    voi = variation_of_information(gt, np.array([[5, 5, 5, 5]]))
    assert voi["voi_merge"] == pytest.approx(1.0) and voi["voi_split"] == pytest.approx(0.0)
    assert adapted_rand_error(gt, np.array([[5, 5, 5, 5]])) > 0


def test_metrics_ignore_ground_truth_background():
    gt = np.array([[0, 1, 1, 0]])
    assert segmentation_scores(gt, np.array([[3, 1, 1, 4]]))["voi"] == 0.0


def test_metrics_reject_mismatched_or_float_labels():
    with pytest.raises(InputError, match="shape"):
        variation_of_information(np.ones((2, 2), int), np.ones((2, 3), int))
    with pytest.raises(InputError, match="integer"):
        variation_of_information(np.ones((2, 2)), np.ones((2, 2), int))


def test_synthetic_volumes_are_reproducible_and_in_range():
    raw, labels = make_volume(3, SMALL)
    raw2, labels2 = make_volume(3, SMALL)
    assert np.array_equal(raw, raw2) and np.array_equal(labels, labels2)
    assert raw.dtype == np.float32 and 0 <= raw.min() and raw.max() <= 1
    assert labels.min() >= 1 and len(np.unique(labels)) > 5


def test_synthetic_cells_are_elongated_along_z():
    _, labels = make_volume(4, SynthConfig(shape=(16, 64, 64)))
    same_z = (labels[1:] == labels[:-1]).mean()
    same_x = (labels[:, :, 1:] == labels[:, :, :-1]).mean()
    # an anisotropic section is 5 px thick, so keep-the-label runs along z are long per voxel step
    assert same_z > 0.7 and same_x > 0.8


def test_membranes_are_darker_than_cell_interiors():
    raw, labels = make_volume(5, SMALL)
    boundary = np.zeros(labels.shape, bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    assert raw[boundary].mean() < raw[~boundary].mean() - 0.1


@pytest.mark.parametrize("method", ["waterz", "skimage"])
def test_ground_truth_affinities_segment_back_into_the_objects(method):
    if method == "waterz" and not waterz_available():
        pytest.skip("waterz is not installed")
    _, labels = make_volume(6, SMALL)
    gt = widen_border(labels)
    affs = labels_to_affinities(torch.from_numpy(gt)).numpy()
    seg = affinities_to_segmentation(affs, threshold=0.5, method=method)
    scores = segmentation_scores(gt, seg)
    assert scores["voi"] < 0.2 and scores["arand"] < 0.02, scores


def test_segmentation_rejects_affinities_of_the_wrong_shape():
    with pytest.raises(InputError, match=r"\(3, D, H, W\)"):
        affinities_to_segmentation(np.zeros((2, 4, 4, 4), np.float32))
