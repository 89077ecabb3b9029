"""Detector state <-> bytes: the one place that knows how a series' detector state is laid out in a store.

    state    = history | incident | len(history) as uint16
    history  = last_end_ms int64, n int64, model_key int64, previous_anomaly float64, weight float64,
               then 5 float64 arrays of F: mean, var, short, short_var, previous
    incident = open uint8, opened_start_ms, opened_end_ms, last_anomalous_end_ms, peak_end_ms (int64),
               windows, normal_run (uint32), peak_surprise, peak_score, opening_surprise (float64),
               then F float32 peak shares

All little endian. The state starts with last_end_ms: both stores compare it so an older state never
overwrites a newer one (the Redis script reads those 8 bytes without decoding the rest).
"""

import struct

from worker.detection.calibration import ScoreHistory
from worker.detection.detector import DetectorState
from worker.detection.incidents import IncidentState

_HISTORY_HEAD = struct.Struct("<qqqdd")
_HISTORY_ARRAYS = 5
_INCIDENT_HEAD = struct.Struct("<BqqqqIIddd")
_SPLIT = struct.Struct("<H")


def encode_history(history: ScoreHistory) -> bytes:
    moments = (*history.mean, *history.var, *history.short, *history.short_var, *history.previous)
    head = _HISTORY_HEAD.pack(history.last_end_ms, history.n, history.model_key, history.previous_anomaly,
                              history.weight)
    return head + struct.pack(f"<{len(moments)}d", *moments)


def decode_history(raw: bytes) -> ScoreHistory:
    last_end_ms, n, key, previous_anomaly, weight = _HISTORY_HEAD.unpack_from(raw)
    f = (len(raw) - _HISTORY_HEAD.size) // (8 * _HISTORY_ARRAYS)
    moments = struct.unpack_from(f"<{_HISTORY_ARRAYS * f}d", raw, _HISTORY_HEAD.size)
    mean, var, short, short_var, previous = (moments[i * f:(i + 1) * f] for i in range(_HISTORY_ARRAYS))
    return ScoreHistory(last_end_ms, n, key, mean, var, short, short_var, previous, previous_anomaly, weight)


def history_bytes(n_features: int) -> int:
    """Bytes of one series' history: fixed by the feature count, whatever the stream length."""
    return _HISTORY_HEAD.size + _HISTORY_ARRAYS * 8 * n_features


def encode_incident(state: IncidentState) -> bytes:
    head = _INCIDENT_HEAD.pack(state.open, state.opened_start_ms, state.opened_end_ms, state.last_anomalous_end_ms,
                               state.peak_end_ms, state.windows, state.normal_run, state.peak_surprise,
                               state.peak_score, state.opening_surprise)
    return head + struct.pack(f"<{len(state.peak_shares)}f", *state.peak_shares)


def decode_incident(raw: bytes) -> IncidentState:
    fields = _INCIDENT_HEAD.unpack_from(raw)
    shares = struct.unpack_from(f"<{(len(raw) - _INCIDENT_HEAD.size) // 4}f", raw, _INCIDENT_HEAD.size)
    return IncidentState(bool(fields[0]), *fields[1:], peak_shares=shares)


def incident_bytes(n_features: int) -> int:
    return _INCIDENT_HEAD.size + 4 * n_features


def encode_detector_state(state: DetectorState) -> bytes:
    """history | incident | the history's length (uint16), so both parts can be found again."""
    history = encode_history(state.history)
    return history + encode_incident(state.incident) + _SPLIT.pack(len(history))


def decode_detector_state(raw: bytes) -> DetectorState:
    (split,) = _SPLIT.unpack(raw[-_SPLIT.size:])
    return DetectorState(decode_history(raw[:split]), decode_incident(raw[split:-_SPLIT.size]))


def detector_state_bytes(n_features: int) -> int:
    """The most one series' detector state takes in the store: it depends on F only."""
    return history_bytes(n_features) + incident_bytes(n_features) + _SPLIT.size


def last_end_ms(raw: bytes) -> int:
    """The replay mark of a stored state: its first 8 bytes (what the Redis script compares)."""
    return struct.unpack_from("<q", raw)[0]
