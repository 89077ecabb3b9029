"""The incident state machine: one incident per anomaly, hysteresis, deterministic ids, bounded state."""

import numpy as np
import pytest

from worker.incidents import (IncidentSettings, IncidentState, Observation, Phase, incident_id, state_bytes,
                              step)

SETTINGS = IncidentSettings(open_surprise=3.0, close_surprise=2.0, close_after=3)
SHARES = np.array([0.2, 0.8], np.float32)


def run(surprises: list[float], series: str = "pump-7", state: IncidentState | None = None,
        settings: IncidentSettings = SETTINGS) -> tuple[IncidentState, list]:
    state = state or IncidentState()
    transitions = []
    for i, surprise in enumerate(surprises):
        seen = Observation(start_ms=1000 * i, end_ms=1000 * (i + 10), score=surprise / 10, surprise=surprise,
                           shares=SHARES)
        state, transition = step(series, state, seen, settings)
        if transition is not None:
            transitions.append(transition)
    return state, transitions


def test_an_anomaly_opens_and_closes_exactly_one_incident() -> None:
    state, transitions = run([0, 0, 4, 5, 3.5, 6, 2.5, 1, 1, 1, 0, 0])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED]
    assert transitions[0].incident_id == transitions[1].incident_id
    assert not state.open


def test_wobbling_between_the_levels_neither_flaps_nor_closes() -> None:
    _, transitions = run([4, 2.5, 3.2, 2.1, 2.9, 2.5, 3.1, 2.2])
    assert [t.phase for t in transitions] == [Phase.OPENED]


def test_a_single_normal_window_inside_an_anomaly_does_not_close_it() -> None:
    _, transitions = run([4, 1, 1, 4, 1, 1, 4, 1, 1, 1])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED]


def test_two_separate_anomalies_are_two_incidents_with_different_ids() -> None:
    _, transitions = run([4, 1, 1, 1, 0, 0, 5, 1, 1, 1])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED, Phase.OPENED, Phase.CLOSED]
    assert transitions[0].incident_id != transitions[2].incident_id


def test_closed_record_carries_peak_duration_and_windows() -> None:
    _, transitions = run([0, 4, 7, 5, 1, 1, 1])
    closed = transitions[-1].state
    assert closed.peak_surprise == 7 and closed.peak_score == pytest.approx(0.7)
    assert closed.peak_end_ms == 12_000 and closed.opened_end_ms == 11_000
    assert closed.last_anomalous_end_ms == 13_000
    assert closed.windows == 6
    assert closed.peak_shares == pytest.approx((0.2, 0.8))


def test_replaying_the_same_windows_from_the_same_state_gives_the_same_ids() -> None:
    first = [t.incident_id for t in run([0, 4, 1, 1, 1])[1]]
    again = [t.incident_id for t in run([0, 4, 1, 1, 1])[1]]
    assert first == again
    assert first[0] == incident_id("pump-7", 11_000)
    assert incident_id("pump-7", 11_000) != incident_id("pump-8", 11_000)


def test_state_round_trips_and_is_bounded_by_the_feature_count() -> None:
    state, _ = run([0, 4, 6] + [3] * 500)
    assert state.open
    raw = state.to_bytes()
    assert len(raw) == state_bytes(2)
    assert IncidentState.from_bytes(raw) == state


def test_close_level_above_open_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="close_surprise"):
        IncidentSettings(open_surprise=2.0, close_surprise=3.0)
