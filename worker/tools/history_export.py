"""`vrae-worker export-history --hours N --out history.csv`: the input topic's recent past as a long CSV.

Model refresh is then two commands: export the last N hours, `vrae train history.csv --out model.pt`;
the running worker picks the new file up by itself (`worker/model_reload.py`). Events are parsed by
the same `EventParser` as the worker (invalid ones are skipped and counted), de-duplicated per
(series, timestamp) and written grouped by series in timestamp order, the format `vrae train` reads.
"""

import argparse
import csv
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from vrae_model.artifact import load_artifact
from vrae_model.exceptions import VraeError
from worker.config import KafkaSettings, Settings
from worker.events import Event, EventParser, SourceRecord
from worker.exceptions import UsageError


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    series: int
    invalid: int
    duplicates: int


def write_history_csv(events: Iterable[Event], feature_names: tuple[str, ...], out: Path) -> ExportSummary:
    """Write `series_id,timestamp,<features>`; the first event of a (series, timestamp) wins."""
    by_series: dict[str, dict[int, Event]] = {}
    duplicates = 0
    for event in events:
        seen = by_series.setdefault(event.series_id, {})
        if event.ts_ms in seen:
            duplicates += 1
            continue
        seen[event.ts_ms] = event
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series_id", "timestamp", *feature_names])
        for series_id in sorted(by_series):
            for ts_ms in sorted(by_series[series_id]):
                values = by_series[series_id][ts_ms].values
                writer.writerow([series_id, ts_ms, *(repr(float(v)) for v in values)])
                rows += 1
    return ExportSummary(rows=rows, series=len(by_series), invalid=0, duplicates=duplicates)


def read_since(settings: KafkaSettings, since_ms: int, poll_timeout_ms: int = 1000) -> Iterator[SourceRecord]:
    """Every record of the input topic stamped from since_ms up to the moment the export started.

    Uses no consumer group and commits nothing: the running workers' offsets are untouched. A
    partition is done when a record stamped after the start shows up, or when a poll brings nothing
    more and its position reached the end offset (not the end offset alone: some brokers, Tansu
    among them, report it before the last records of a batch).
    """
    until_ms = int(time.time() * 1000)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers.split(","), group_id=None,
                             client_id=f"{settings.client_id}-export", enable_auto_commit=False,
                             **settings.security_config())
    try:
        partitions = [TopicPartition(settings.input_topic, p)
                      for p in sorted(consumer.partitions_for_topic(settings.input_topic) or ())]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.offsets_for_times({tp: since_ms for tp in partitions})
        remaining = {}
        for tp in partitions:
            start = starts.get(tp)
            if start is None:
                consumer.pause(tp)
            else:
                consumer.seek(tp, start.offset)
                remaining[tp] = ends[tp]
        while remaining:
            polled = consumer.poll(timeout_ms=poll_timeout_ms)
            for tp, records in polled.items():
                for r in records:
                    if tp not in remaining:
                        break
                    if r.timestamp > until_ms:
                        del remaining[tp]
                        consumer.pause(tp)
                    elif r.timestamp >= since_ms:  # offsets_for_times is only a lower bound on some brokers
                        yield SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for tp in [tp for tp, end in remaining.items() if tp not in polled and consumer.position(tp) >= end]:
                del remaining[tp]
                consumer.pause(tp)
    finally:
        consumer.close()


def export_history(settings: KafkaSettings, parser: EventParser, since_ms: int, out: Path) -> ExportSummary:
    invalid = 0

    def events() -> Iterator[Event]:
        nonlocal invalid
        for record in read_since(settings, since_ms):
            parsed = parser.parse(record)
            if isinstance(parsed, Event):
                yield parsed
            else:
                invalid += 1

    summary = write_history_csv(events(), parser.feature_names, out)
    return ExportSummary(rows=summary.rows, series=summary.series, invalid=invalid, duplicates=summary.duplicates)


def command(args: argparse.Namespace, settings: Settings) -> int:
    """The last N hours of the input topic as a long CSV for `vrae train` (model refresh)."""
    if args.hours <= 0:
        raise UsageError(f"--hours must be positive, got {args.hours}")
    if args.features:
        features = tuple(name.strip() for name in args.features.split(",") if name.strip())
    else:
        try:
            features = tuple(load_artifact(settings.model.path).metadata["features"])
        except VraeError as error:
            raise UsageError(f"{error} (or name the features with --features a,b)") from None
    since_ms = int(time.time() * 1000 - args.hours * 3_600_000)
    try:
        summary = export_history(settings.kafka, EventParser(features), since_ms, Path(args.out))
    except KafkaError as error:
        raise UsageError(f"cannot read {settings.kafka.input_topic} from {settings.kafka.bootstrap_servers}: "
                         f"{error!r}; check VRAE_KAFKA__BOOTSTRAP_SERVERS") from None
    print(f"wrote {summary.rows} events of {summary.series} series to {args.out} "
          f"({summary.invalid} invalid and {summary.duplicates} duplicate events skipped)")
    return 0
