"""Detector state <-> bytes: the one place that knows how a series' detector state is laid out in a store.

    state = last_end_ms, model_key, the layout version (int64 each), the other scalars of
            worker.detection.calibration.SCALARS (int64 / float64, in that order), then float32 arrays:
            the quarantine (q x 8 values, q x F levels), the spikes and blips waiting to teach (spike_slots x 2)
            and the noise scale (F), the usual error of each day slot (48) and its count (48, uint16), the peak
            shares, the level centre and spread (F each), the hold (h x 8 values, h x F levels), the 8
            histograms' tail shapes (q and scale, 8 each), the 8 x 96 histograms as the mass in bins >= j

All little endian, a fixed size for a feature count (`detector_state_bytes`). The state starts with
last_end_ms (int64): both stores compare those 8 bytes so an older state never replaces a newer one,
and the Redis script reads them without decoding the rest. A state of another size or layout version,
or kept for another model, restarts fresh, keeping its replay mark. A batch's states are decoded and
encoded with one numpy structured array each way, not series by series.

The arrays are ordered by how often they change, most often first: the quarantine and the spikes waiting
with every window; the noise scale and the usual error of the window's day slot with every window outside an
incident; the peak shares at an incident's
peak; the level with every window taught; the hold with every window of the learning period (it gathers
blocks to teach), then with one in `hold_stride`; the histograms and their tail shapes with one window in
`hold_stride` (docs/detection.md, Learning; at cadences slower than 5 minutes more often, every window at one
an hour: `calibration.hold_strides`). So 11 windows in 12 change only a state's
first 1.9 kB (2.5 kB while it learns) of 5.7 kB at one feature, and the Redis store writes only that part
(`StateLayout.changed_prefix`).
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from worker.detection.calibration import BINS, COLUMNS, DAY_SLOTS, SCALARS, Batch, CalibrationSettings

# Bumped whenever the order of the fields changes: a state of another version restarts fresh.
LAYOUT_VERSION = 10

# A state's first bytes, last_end_ms, model_key and its layout tag (the version and the size): which windows
# it judged, under which model, laid out how. Two states that start alike are the same series' history
# (worker.state.cache), of the same size (so the Redis store can overwrite a part of one without reading more).
MARK_BYTES = 24

_ARRAYS = ("pending", "pending_level", "spike_block", "noise", "season", "season_n", "peak_shares", "centre", "spread",
           "hold", "hold_level", "tail_q", "tail_scale", "above")
_KINDS = {"season_n": "<u2"}  # stored other than as float32
# where a state's tail may start that a window leaves as it was (see the module docstring)
_STABLE_FROM = ("peak_shares", "hold", "tail_q")


@lru_cache(maxsize=32)
def _layout(n_features: int, quarantine: int, hold: int, spikes: int) -> np.dtype:
    q, f = quarantine, n_features
    shapes = ((q, COLUMNS), (q, f), (spikes, 2), (f,), (DAY_SLOTS,), (DAY_SLOTS,), (f,), (f,), (f,), (hold, COLUMNS),
              (hold, f), (COLUMNS,), (COLUMNS,), (COLUMNS, BINS))
    scalars = [(name, "<i8" if kind is np.int64 else "<f8") for name, kind in SCALARS]
    return np.dtype(scalars[:2] + [("layout", "<i8")] + scalars[2:]
                    + [(name, _KINDS.get(name, "<f4"), shape) for name, shape in zip(_ARRAYS, shapes)])


def layout_tag(layout: np.dtype) -> int:
    return LAYOUT_VERSION << 32 | layout.itemsize


def detector_state_bytes(n_features: int, settings: CalibrationSettings = CalibrationSettings()) -> int:
    """Bytes of one series' state: fixed by the feature count, whatever the stream length."""
    return _layout(n_features, settings.quarantine, settings.hold_slots, settings.spike_slots).itemsize


@dataclass(frozen=True)
class StateLayout:
    """What a store needs to write only the changed part of a state: its size, and where the parts that
    most windows leave unchanged start (ascending)."""

    size: int
    stable_offsets: tuple[int, ...]

    def changed_prefix(self, state: bytes, base: bytes) -> int:
        """How much of `state` a store holding `base` must overwrite: up to the first stable offset from
        which both are equal, else all of it. Comparing bytes, not fields, keeps it right whatever changed
        them."""
        if len(state) != self.size or len(base) != self.size:
            return len(state)
        for offset in self.stable_offsets:
            if state[offset:] == base[offset:]:
                return offset
        return len(state)


def state_layout(n_features: int, settings: CalibrationSettings = CalibrationSettings()) -> StateLayout:
    layout = _layout(n_features, settings.quarantine, settings.hold_slots, settings.spike_slots)
    return StateLayout(layout.itemsize, tuple(sorted(layout.fields[name][1] for name in _STABLE_FROM)))


def encode_states(batch: Batch) -> list[bytes]:
    """Each series' state of a batch."""
    n, n_features = len(batch), batch.centre.shape[1]
    layout = _layout(n_features, batch.pending.shape[1], batch.hold.shape[1], batch.spike_block.shape[1])
    records = np.empty(n, layout)
    records["layout"] = layout_tag(layout)
    for name, _ in SCALARS:
        records[name] = getattr(batch, name)
    for name in _ARRAYS:
        records[name] = getattr(batch, name)
    raw, size = memoryview(records).cast("B"), layout.itemsize  # each state copied once, from the records
    return [raw[i * size:(i + 1) * size].tobytes() for i in range(n)]


def decode_states(raws: Sequence[bytes | None], model_key: int, n_features: int,
                  settings: CalibrationSettings, wander: tuple[float, ...] | None = None) -> Batch:
    """The states of a batch's series under the model tagged `model_key` (None: a new series, which starts from
    the prior, its level column's widened by the model's `wander`: `Reference.wander`).

    Rule on a model swap: errors of two models live on different scales, so a state kept for another
    model, or of another layout, restarts fresh, keeping its replay mark (last_end_ms)."""
    layout = _layout(n_features, settings.quarantine, settings.hold_slots, settings.spike_slots)
    usable = [i for i, raw in enumerate(raws) if raw is not None and len(raw) == layout.itemsize]
    if len(usable) == len(raws) and usable:  # the usual batch: every series has a state; one copy a field
        records = np.frombuffer(b"".join(raws), layout)  # type: ignore[arg-type]
        if bool(((records["model_key"] == model_key) & (records["layout"] == layout_tag(layout))).all()):
            return Batch(**{name: np.array(records[name], kind) for name, kind in SCALARS},
                         **{name: np.array(records[name], np.float32 if name == "above" else np.float64)
                            for name in _ARRAYS})
    batch = Batch.fresh(len(raws), n_features, settings, model_key, wander)
    for i, raw in enumerate(raws):
        if raw is not None and len(raw) >= 8 and len(raw) != layout.itemsize:
            batch.last_end_ms[i] = last_end_ms(raw)
    if not usable:
        return batch
    records = np.frombuffer(b"".join(raws[i] for i in usable), layout)
    mine = (records["model_key"] == model_key) & (records["layout"] == layout_tag(layout))
    rows = np.asarray(usable, np.int64)
    batch.last_end_ms[rows] = records["last_end_ms"]
    rows, records = rows[mine], records[mine]
    if len(rows):
        for name, _ in SCALARS:
            getattr(batch, name)[rows] = records[name]
        for name in _ARRAYS:
            getattr(batch, name)[rows] = records[name]
    return batch


def last_end_ms(raw: bytes) -> int:
    """The replay mark of a stored state: its first 8 bytes (what the Redis script compares)."""
    return struct.unpack_from("<q", raw)[0]
