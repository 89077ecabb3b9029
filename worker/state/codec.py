"""Detector state <-> bytes: the one place that knows how a series' detector state is laid out in a store.

    state = the scalars of worker.detection.calibration.SCALARS (int64 / float64, in that order), then
            float32 arrays: the 4 x 96 histograms, the quarantine (q x 4 values, q x F levels), the
            level centre and spread (F each), the peak shares (F)

All little endian, a fixed size for a feature count (`detector_state_bytes`). The state starts with
last_end_ms (int64): both stores compare those 8 bytes so an older state never replaces a newer one,
and the Redis script reads them without decoding the rest. A state of another size (another layout)
or kept for another model restarts fresh, keeping its replay mark.
"""

import struct
from collections.abc import Sequence

import numpy as np

from worker.detection.calibration import BINS, COLUMNS, SCALARS, Batch, CalibrationSettings, cumulative, histogram

_HEAD = struct.Struct("<" + "".join("q" if kind is np.int64 else "d" for _, kind in SCALARS))
_ARRAYS = ("above", "pending", "pending_level", "centre", "spread", "peak_shares")


def _shapes(n_features: int, settings: CalibrationSettings) -> tuple[tuple[int, ...], ...]:
    q = settings.quarantine
    return (COLUMNS, BINS), (q, COLUMNS), (q, n_features), (n_features,), (n_features,), (n_features,)


def detector_state_bytes(n_features: int, settings: CalibrationSettings = CalibrationSettings()) -> int:
    """Bytes of one series' state: fixed by the feature count, whatever the stream length."""
    return _HEAD.size + 4 * sum(int(np.prod(shape)) for shape in _shapes(n_features, settings))


def encode_states(batch: Batch) -> list[bytes]:
    """Each series' state of a batch (the histograms stored as themselves, not their cumulative sums)."""
    hist = histogram(batch.above)
    out = []
    for i in range(len(batch)):
        head = _HEAD.pack(*(getattr(batch, name)[i].item() for name, _ in SCALARS))
        arrays = [hist[i]] + [getattr(batch, name)[i] for name in _ARRAYS[1:]]
        out.append(head + b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays))
    return out


def decode_states(raws: Sequence[bytes | None], model_key: int, n_features: int,
                  settings: CalibrationSettings) -> Batch:
    """The states of a batch's series under the model tagged `model_key` (None: a new series).

    Rule on a model swap: errors of two models live on different scales, so a state kept for another
    model, or of another layout, restarts fresh, keeping its replay mark (last_end_ms)."""
    batch = Batch.fresh(len(raws), n_features, settings, model_key)
    size, shapes = detector_state_bytes(n_features, settings), _shapes(n_features, settings)
    hist = np.zeros_like(batch.above)
    decoded = []
    for i, raw in enumerate(raws):
        if raw is None or len(raw) < 8:
            continue
        if len(raw) != size or struct.unpack_from("<q", raw, 8)[0] != model_key:
            batch.last_end_ms[i] = last_end_ms(raw)
            continue
        for (name, _), value in zip(SCALARS, _HEAD.unpack_from(raw)):
            getattr(batch, name)[i] = value
        offset = _HEAD.size
        decoded.append(i)
        for name, shape in zip(_ARRAYS, shapes):
            count = int(np.prod(shape))
            (hist if name == "above" else getattr(batch, name))[i] = np.frombuffer(raw, "<f4", count,
                                                                                   offset).reshape(shape)
            offset += 4 * count
    if decoded:  # a new series keeps the prior Batch.fresh gave it
        batch.above[decoded], batch.moment[decoded] = cumulative(hist[decoded])
    return batch


def last_end_ms(raw: bytes) -> int:
    """The replay mark of a stored state: its first 8 bytes (what the Redis script compares)."""
    return struct.unpack_from("<q", raw)[0]
