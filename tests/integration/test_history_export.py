"""`vrae-worker export-history` against the real broker: the recent past of the input topic as a long CSV."""

import time
from pathlib import Path

import pytest

from vrae_model.data import read_long_csv
from worker.events import EventParser
from worker.tools.history_export import export_history

pytestmark = pytest.mark.integration


def test_export_reads_the_recent_records_into_a_csv_vrae_train_reads(make_settings, kafka_tools,
                                                                     tmp_path: Path) -> None:
    settings = make_settings(with_model=False)
    topic = settings.kafka.input_topic
    kafka_tools.produce_events(topic, [(series, 1000 * (i + 1), [float(i), float(-i)])
                                       for i in range(20) for series in ("pump-1", "pump-2")])
    kafka_tools.produce(topic, [(b"pump-1", b"not json"), (b"pump-1", b'{"series_id": "pump-1", "ts": 1000, '
                                                                    b'"values": [9, 9]}')])
    parser = EventParser(("temp", "rpm"))
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    summary = export_history(settings.kafka, parser, hour_ago_ms, tmp_path / "history.csv")
    assert (summary.rows, summary.series, summary.invalid, summary.duplicates) == (40, 2, 1, 1)
    data = read_long_csv(tmp_path / "history.csv")
    assert data.feature_names == ["temp", "rpm"]
    assert data.series["pump-1"].values[0].tolist() == [0.0, 0.0]  # the first (1000, ...) event wins
    assert data.series["pump-2"].timestamps.tolist() == [1000 * (i + 1) for i in range(20)]

    future_ms = int(time.time() * 1000) + 3_600_000
    assert export_history(settings.kafka, parser, future_ms, tmp_path / "empty.csv").rows == 0
