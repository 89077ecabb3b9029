import numpy as np
import pytest

from vrae_model.windowing import due_positions, is_due


@pytest.mark.parametrize("window,stride", [(1, 1), (3, 1), (5, 2), (4, 7)])
def test_due_positions_match_is_due_event_by_event(window: int, stride: int) -> None:
    expected = [n for n in range(30) if is_due(n, window, stride)]
    assert due_positions(30, window, stride).tolist() == expected


def test_first_due_window_ends_at_event_window_minus_one() -> None:
    assert not is_due(3, 5, 1)
    assert is_due(4, 5, 1)


def test_stride_counts_from_the_first_full_window() -> None:
    assert due_positions(12, 4, 3).tolist() == [3, 6, 9]


def test_series_shorter_than_window_has_no_due_window() -> None:
    assert due_positions(3, 4, 1).size == 0
    assert due_positions(0, 4, 1).dtype == np.int64


@pytest.mark.parametrize("window,stride", [(0, 1), (3, 0)])
def test_non_positive_window_or_stride_is_rejected(window: int, stride: int) -> None:
    with pytest.raises(ValueError):
        is_due(5, window, stride)
