"""Neighbour features on layouts with known answers (independent of cp_measure)."""

from __future__ import annotations

import numpy as np
import pytest

from pairedscreen.paint.features.neighbors import measure_neighbors


def _squares(gap: int) -> np.ndarray:
    lab = np.zeros((20, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 15 + gap : 25 + gap] = 2
    return lab


@pytest.mark.parametrize("gap", [0, 3, 4, 5, 8])
def test_within_distance_counts_pixel_centre_gaps(gap):
    # nearest pixel centres are gap + 1 apart: neighbours iff (gap + 1) <= distance
    f = measure_neighbors(_squares(gap), 5)
    expected = 1 if gap + 1 <= 5 else 0
    assert f["Neighbors_NumberOfNeighbors_5"].tolist() == [expected, expected]


def test_adjacent_percent_touching_and_closest():
    lab = _squares(0)
    f = measure_neighbors(lab, 0, method="adjacent")
    assert f["Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [1, 1]
    # outline of a 10x10 square: 36 pixels; 10 of them face the other square
    assert f["Neighbors_PercentTouching_Adjacent"].tolist() == pytest.approx([100 * 10 / 36] * 2)
    assert f["Neighbors_FirstClosestObjectNumber_Adjacent"].tolist() == [2, 1]
    assert f["Neighbors_FirstClosestDistance_Adjacent"].tolist() == pytest.approx([10, 10])
    # only two objects: no second closest
    assert f["Neighbors_SecondClosestObjectNumber_Adjacent"].tolist() == [0, 0]
    assert f["Neighbors_AngleBetweenNeighbors_Adjacent"].tolist() == [0, 0]


def test_angle_between_neighbours_and_label_ids():
    lab = np.zeros((60, 60), np.int32)
    lab[9:12, 9:12] = 10     # centre (10, 10)
    lab[9:12, 39:42] = 20    # (10, 40): 30 to the right
    lab[49:52, 9:12] = 30    # (50, 10): 40 below
    f = measure_neighbors(lab, 5)
    assert f["Neighbors_FirstClosestObjectNumber_5"][0] == 20
    assert f["Neighbors_SecondClosestObjectNumber_5"][0] == 30
    assert f["Neighbors_FirstClosestDistance_5"][0] == pytest.approx(30)
    assert f["Neighbors_SecondClosestDistance_5"][0] == pytest.approx(40)
    assert f["Neighbors_AngleBetweenNeighbors_5"][0] == pytest.approx(90)
    assert f["Neighbors_NumberOfNeighbors_5"].tolist() == [0, 0, 0]
    assert f["Neighbors_PercentTouching_5"].tolist() == [0, 0, 0]


def test_single_object_and_bad_distance():
    lab = np.zeros((10, 10), np.int32)
    lab[2:5, 2:5] = 1
    f = measure_neighbors(lab, 5)
    assert f["Neighbors_FirstClosestObjectNumber_5"].tolist() == [0]
    with pytest.raises(ValueError):
        measure_neighbors(lab, 2.5)
