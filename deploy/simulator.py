"""Sensor-event producer for the compose demo: synthetic series with injected, labelled anomalies.

Streams `vrae_model.synth` data to the input topic at a steady rate, one JSON event per record
(`{"series_id", "ts", "features": {name: value}}`, key = series_id so a series stays on one
partition and in order). Each injected anomaly is logged when its first event is sent, so the alert
printer's output can be checked against it by eye. Kafka connection and topic come from the worker's
own VRAE_KAFKA__* settings, TLS/SASL included.

    python deploy/simulator.py --series 20 --rate 50 --anomaly-rate 0.002
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from vrae_model.synth import SynthConfig, SynthData, generate, iter_events

log = logging.getLogger("vrae.simulator")


@dataclass(frozen=True)
class SimEvent:
    """One record to send, with the ground truth the worker never sees."""

    key: bytes
    value: bytes
    series_id: str
    ts_ms: int
    anomaly_kind: str  # '' when normal


def encode_event(series_id: str, ts_ms: int, values: np.ndarray, feature_names: Sequence[str]) -> tuple[bytes, bytes]:
    """Kafka key and value of one event in the worker's input format (features by name)."""
    # str() of a float32 is its shortest round-trip form: 18.46, not 18.459999084472656.
    features = {name: float(str(value)) for name, value in zip(feature_names, values, strict=True)}
    payload = {"series_id": series_id, "ts": int(ts_ms), "features": features}
    return series_id.encode("utf-8"), json.dumps(payload, separators=(",", ":")).encode("utf-8")


def lap_config(base: SynthConfig, lap: int) -> SynthConfig:
    """Lap `lap` of an endless stream: fresh randomness, timestamps continuing where the last lap ended."""
    return SynthConfig(**{**base.__dict__, "seed": base.seed + lap,
                          "start_ms": base.start_ms + lap * base.length * base.interval_ms})


def lap_events(data: SynthData) -> Iterator[SimEvent]:
    """Every event of one lap in timestamp order (all series interleaved, as a fleet would send them)."""
    for series_id, ts_ms, values, _label, kind in iter_events(data):
        key, value = encode_event(series_id, ts_ms, values, data.feature_names)
        yield SimEvent(key=key, value=value, series_id=series_id, ts_ms=ts_ms, anomaly_kind=kind)


def stream(base: SynthConfig, laps: int | None = None) -> Iterator[SimEvent]:
    """Lap after lap (forever when `laps` is None). A lap boundary is a discontinuity and may alert."""
    lap = 0
    while laps is None or lap < laps:
        yield from lap_events(generate(lap_config(base, lap)))
        lap += 1


def iso_utc(ts_ms: int) -> str:
    """The alert printer's time format, so injected anomalies and alerts line up by eye."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Pacer:
    """Holds a steady events/s rate against the wall clock, catching up after a slow send."""

    def __init__(self, rate_per_s: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self._interval_s = 1.0 / rate_per_s
        self._clock, self._sleep = clock, sleep
        self._next = clock()

    def wait(self) -> None:
        delay = self._next - self._clock()
        if delay > 0:
            self._sleep(delay)
        self._next += self._interval_s


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=20, help="number of sensors (default 20)")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second, all series (default 50)")
    parser.add_argument("--anomaly-rate", type=float, default=0.002,
                        help="anomalies started per event and series (default 0.002)")
    parser.add_argument("--lap-length", type=int, default=5000,
                        help="events per series before the data is regenerated (default 5000)")
    parser.add_argument("--interval-ms", type=int, default=60_000,
                        help="event-time spacing within a series; keep it equal to the training data's")
    parser.add_argument("--features", default="temp,pressure,vibration",
                        help="comma-separated feature names; must match the model's")
    parser.add_argument("--max-events", type=int, default=None, help="stop after this many events")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.series < 1 or args.rate <= 0 or args.lap_length < 1 or args.interval_ms < 1:
        parser.error("--series, --rate, --lap-length and --interval-ms must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from kafka import KafkaProducer  # the pure parts above are importable without a broker client

    from worker.config import Settings

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    kafka = Settings().kafka
    base = SynthConfig(n_series=args.series, length=args.lap_length, features=tuple(args.features.split(",")),
                       interval_ms=args.interval_ms, anomaly_rate=args.anomaly_rate, seed=args.seed,
                       start_ms=int(time.time() * 1000))
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, client_id="vrae-simulator",
                             acks="all", linger_ms=20, **kafka.security_config())
    pacer, in_anomaly, sent = Pacer(args.rate), set(), 0
    log.info("streaming %d series at %.0f events/s to %s", args.series, args.rate, kafka.input_topic)
    try:
        for event in stream(base):
            if args.max_events is not None and sent >= args.max_events:
                break
            pacer.wait()
            producer.send(kafka.input_topic, key=event.key, value=event.value)
            sent += 1
            if event.anomaly_kind and event.series_id not in in_anomaly:
                log.info("injected %s on %s from %s", event.anomaly_kind, event.series_id, iso_utc(event.ts_ms))
                in_anomaly.add(event.series_id)
            elif not event.anomaly_kind:
                in_anomaly.discard(event.series_id)
    finally:
        producer.flush()
        producer.close()
    log.info("sent %d events", sent)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """main() with its failures as one line on stderr and exit code 2, like every vrae command."""
    from kafka.errors import KafkaError
    from pydantic import ValidationError

    from worker.config import describe_invalid_setting

    try:
        return main(argv)
    except ValidationError as error:
        print(f"simulator: {describe_invalid_setting(error)}", file=sys.stderr)
    except KafkaError as error:
        print(f"simulator: {error}; check VRAE_KAFKA__BOOTSTRAP_SERVERS and that the broker is up", file=sys.stderr)
    except ValueError as error:  # SynthConfig refusing the flags, e.g. duplicate --features
        print(f"simulator: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(run())
