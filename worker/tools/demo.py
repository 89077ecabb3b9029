"""`vrae-worker demo` (`make demo`): the whole pipeline on one machine, start to summary.

It starts a Tansu broker and a redis-server on free ports (unless VRAE_KAFKA__BOOTSTRAP_SERVERS /
VRAE_REDIS__URL point at real ones), trains a model on clean synthetic history with the `vrae synth`
and `vrae train` CLIs (subprocesses: the worker package never imports training code), runs the
worker on a thread, streams synthetic sensors with injected anomalies, prints incidents (or, with
`--mode windows`, per-window alerts) as they arrive, and ends with throughput, detection quality against
the injected labels and event-to-record latency.
Everything it started is stopped on the way out, Ctrl-C and failures included.
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from vrae_model.artifact import load_artifact
from vrae_model.exceptions import VraeError
from vrae_model.windowing import due_positions
from worker.app import BackgroundWorker, build_service
from worker.config import (DetectionSettings, KafkaSettings, ModelSettings, RedisSettings, ServiceSettings, Settings,
                           WindowSettings)
from worker.metrics import Metrics
from worker.records import iso_from_ms
from worker.tools import local_services

INTERVAL_MS = 1000
FLEET_SEED = 1
# A few broken events among the good ones, to show the dead-letter topic at work.
BROKEN_EVENTS = (b"{not json", b'{"series_id": "sensor-000", "ts": "yesterday", "value": 1}',
                 b'{"series_id": "sensor-000", "ts": 1, "features": {"rpm": 1500}}')
BROKEN_KEY = b"sensor-000"
FAST_GROUP_JOIN = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000,
                   "poll_timeout_ms": 100, "fetch_max_wait_ms": 20, "producer_linger_ms": 2}


DEFAULT_START = "2026-01-01T00:00:00Z"


def _start_ms(text: str) -> int | None:
    """`now` (None: read the clock when the stream starts), epoch milliseconds, or ISO-8601 (UTC if no offset)."""
    if text == "now":
        return None
    if text.isdigit():
        return int(text)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not `now`, epoch ms or ISO-8601") from None
    return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrae-worker demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10, help="sensors streamed (default 10)")
    parser.add_argument("--events", type=int, default=600, help="events streamed per sensor (default 600)")
    parser.add_argument("--history", type=int, default=1000, help="clean training events per sensor (default 1000)")
    parser.add_argument("--anomalies", type=int, default=2, help="anomalies injected per sensor (default 2)")
    parser.add_argument("--window", type=int, default=32, help="window length T (default 32)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--preset", default="default", help="model preset for `vrae train` (default: default)")
    parser.add_argument("--quantile", type=float, default=0.995,
                        help="alert threshold: this quantile of the validation scores (default 0.995); a short "
                        "demo training run is too small for the POT tail the `default` preset uses")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s streamed, 0 = as fast as possible "
                        "(default 1000)")
    parser.add_argument("--stride", type=int, default=1, help="score every k-th window (default 1)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="working directory (default "
                        "demo-output/)")
    parser.add_argument("--start", type=_start_ms, default=DEFAULT_START,
                        help="event time of the first streamed event: ISO-8601, epoch ms, or `now` for live "
                             f"timestamps (default {DEFAULT_START}: the same data, and so the same summary, "
                             "every run)")
    parser.add_argument("--mode", choices=("incidents", "windows"), default="incidents",
                        help="incidents: per-series calibration, one opened/closed record per anomaly (default); "
                             "windows: one alert per window over the model's threshold")
    parser.add_argument("--model", type=Path, help="use this artifact instead of training one")
    parser.add_argument("--quiet-alerts", action="store_true", help="print the summary only")
    return parser


@dataclass
class StreamEvent:
    series_id: str
    ts_ms: int
    values: list[float]
    label: int
    kind: str


class GroundTruth:
    """The injected labels of the stream, per series, to judge alerts against."""

    def __init__(self, stream: Sequence[StreamEvent]) -> None:
        self._events: dict[str, list[StreamEvent]] = {}
        for event in stream:
            self._events.setdefault(event.series_id, []).append(event)
        self._index = {(e.series_id, e.ts_ms): i for events in self._events.values() for i, e in enumerate(events)}

    def window_kind(self, series_id: str, start_ms: int, end_ms: int) -> str:
        """The injected anomaly kind inside a window, '' when the window is all normal."""
        events = self._events.get(series_id, [])
        first, last = self._index.get((series_id, start_ms), 0), self._index.get((series_id, end_ms), -1)
        return next((e.kind for e in events[first:last + 1] if e.label), "")

    def evaluate(self, alerted: set[tuple[str, int]], window: int, stride: int) -> dict[str, float]:
        """Event level (a window is anomalous when its last event is labelled, as `vrae score` counts)
        and incident level (an injected anomaly is caught when an alerted window overlaps it)."""
        positives, caught, incidents = 0, 0, 0
        true_positives = 0
        for series_id, events in self._events.items():
            ends = due_positions(len(events), window, stride)
            labelled = {int(n) for n in ends if events[n].label}
            flagged = {int(n) for n in ends if (series_id, events[n].ts_ms) in alerted}
            positives += len(labelled)
            true_positives += len(labelled & flagged)
            for start, stop in _runs([e.label for e in events]):
                incidents += 1
                caught += any(start <= end and end - window + 1 <= stop for end in flagged)
        return {"precision": true_positives / len(alerted) if alerted else float("nan"),
                "recall": true_positives / positives if positives else float("nan"),
                "positives": positives, "caught": caught, "incidents": incidents}


    def evaluate_incidents(self, openings: set[tuple[str, int]], window: int) -> dict[str, float]:
        """An opening is on an anomaly when its window (the `window` events up to the one that opened it)
        holds an injected event; an anomaly is caught when an incident opened on it."""
        on_anomaly, caught, incidents = 0, 0, 0
        for series_id, events in self._events.items():
            opened = [n for n, e in enumerate(events) if (series_id, e.ts_ms) in openings]
            runs = _runs([e.label for e in events])
            incidents += len(runs)
            caught += sum(any(start <= n and n - window + 1 <= stop for n in opened) for start, stop in runs)
            on_anomaly += sum(any(start <= n and n - window + 1 <= stop for start, stop in runs) for n in opened)
        return {"precision": on_anomaly / len(openings) if openings else float("nan"), "on_anomaly": on_anomaly,
                "caught": caught, "incidents": incidents}


def _runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) positions of each run of 1s."""
    runs, start = [], None
    for position, label in enumerate([*labels, 0]):
        if label and start is None:
            start = position
        elif not label and start is not None:
            runs.append((start, position - 1))
            start = None
    return runs


@dataclass
class ReceivedAlert:
    document: dict
    received_s: float


@dataclass
class AlertReader:
    """Reads the alert topic on a thread, printing each alert as one compact line."""

    bootstrap: str
    topic: str
    quiet: bool
    truth: GroundTruth
    alerts: list[ReceivedAlert] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "AlertReader":
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 fetch_max_wait_ms=10)
        consumer.assign([TopicPartition(self.topic, 0)])
        consumer.seek_to_beginning()
        self._thread = threading.Thread(target=self._run, args=(consumer,), daemon=True, name="alert-reader")
        self._thread.start()
        return self

    def _run(self, consumer: KafkaConsumer) -> None:
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        alert = ReceivedAlert(json.loads(record.value), time.monotonic())
                        self.alerts.append(alert)
                        if not self.quiet:
                            print(self._line(alert.document), flush=True)
        finally:
            consumer.close()

    def _line(self, alert: dict) -> str:
        top = ", ".join(f"{f['name']} {f['share']:.2f}" for f in alert["top_features"])
        kind = self.truth.window_kind(alert["series_id"], alert["window_start"], alert["window_end"])
        truth = f"injected {kind}" if kind else "normal window"
        if alert.get("type") == "incident":
            peak = alert["peak"]
            return (f"INCIDENT {alert['phase'].upper():<6} {alert['series_id']:<12} {iso_from_ms(alert['window_end'])}  "
                    f"surprise {alert['surprise']:5.1f} (peak {peak['surprise']:5.1f})  {alert['windows']:3d} windows  "
                    f"top: {top}  [{truth}]")
        return (f"ALERT {alert['series_id']:<12} {alert['window_end_iso']}  anomaly {alert['anomaly_score']:.4f}  "
                f"score {alert['score']:8.3f}  top: {top}  [{truth}]")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def run_demo(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on `kill` as on Ctrl-C
    try:
        with ExitStack() as stack:
            return _run(args, stack)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        return 130
    except (local_services.ServiceError, VraeError, subprocess.CalledProcessError) as error:
        print(f"vrae-worker demo: {error}", file=sys.stderr)
        return 2


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, stack: ExitStack) -> int:
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    bootstrap, redis_url = _services(out, stack)
    # The same synthetic fleet (seed) before and after the start: clean history to train on, then the
    # stream continues the same machines with anomalies injected. Synth draws noise and incidents from
    # the start time too, so a fixed start gives the same data every run.
    start_ms = int(time.time() * 1000) if args.start is None else args.start
    history_start_ms = start_ms - args.history * INTERVAL_MS
    model = args.model or _train(args, out, start_ms=history_start_ms)
    features = load_artifact(model).metadata["features"]
    history = _history(args, out, history_start_ms, features)
    stream = _synthesise(args, out, start_ms=start_ms, features=features)
    settings = _settings(args, bootstrap, redis_url, model, out)
    local_services.create_topics(bootstrap, [settings.kafka.input_topic, settings.kafka.alert_topic,
                                             settings.kafka.dlq_topic])
    truth = GroundTruth(stream)
    reader = AlertReader(bootstrap, settings.kafka.alert_topic, args.quiet_alerts, truth).start()
    stack.callback(reader.stop)
    metrics = Metrics()
    metrics.serve(settings.service.metrics_port, "127.0.0.1")
    worker = BackgroundWorker(build_service(settings, metrics)).start()
    stack.callback(worker.stop)
    local_services.wait_until(lambda: bool(worker.service.source.assigned()), 60, "the worker joining its group")
    print(f"worker running; metrics at http://127.0.0.1:{settings.service.metrics_port}/metrics")
    # As a worker deployed on a topic that still holds its history: each sensor first learns its own normal
    # from the history the model was trained on (a new series opens no incident while it learns).
    print(f"replaying the {len(history)} events of history the model was trained on, so each sensor learns "
          "its normal ...", flush=True)
    _produce(bootstrap, settings.kafka.input_topic, history, rate=0, broken=False)
    _wait_until_processed(worker, len(history), started_s=time.monotonic())
    print(f"streaming {len(stream)} events from {args.series} sensors at "
          f"{'full speed' if args.rate <= 0 else f'{args.rate:.0f} events/s'}; {args.mode}:", flush=True)
    sent_at, stream_s = _produce(bootstrap, settings.kafka.input_topic, stream, args.rate)
    processed_s = _wait_until_processed(worker, len(history) + len(stream) + len(BROKEN_EVENTS),
                                        started_s=sent_at[stream[0].series_id, stream[0].ts_ms])
    time.sleep(0.5)  # the last alerts are in flight to the reader
    reader.stop()
    _summary(args, stream, truth, reader.alerts, sent_at, stream_s, processed_s, worker, time.monotonic() - started)
    return 0


def _services(out: Path, stack: ExitStack) -> tuple[str, str]:
    bootstrap = os.environ.get("VRAE_KAFKA__BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("VRAE_REDIS__URL")
    if redis_url is None:
        redis = stack.enter_context(local_services.start_redis(log_dir=out / "logs"))
        redis_url = local_services.redis_url(redis)
        print(f"started redis-server on port {redis.port}")
    if bootstrap is None:
        broker = stack.enter_context(local_services.start_tansu(log_dir=out / "logs"))
        bootstrap = local_services.bootstrap(broker)
        print(f"started the Tansu broker on port {broker.port}")
    return bootstrap, redis_url


def _vrae(*arguments: str) -> list[str]:
    """Run the `vrae` CLI of this environment (the worker never imports the training code itself)."""
    binary = shutil.which("vrae", path=str(Path(sys.executable).parent)) or shutil.which("vrae")
    return [binary, *arguments] if binary else [sys.executable, "-m", "vrae_model.cli", *arguments]


def _train(args: argparse.Namespace, out: Path, start_ms: int) -> Path:
    history, model = out / "history.csv", out / "model.pt"
    subprocess.run(_vrae("synth", "--out", str(history), "--series", str(args.series), "--length",
                         str(args.history), "--clean", "--interval-ms", str(INTERVAL_MS), "--seed", str(FLEET_SEED),
                         "--start", str(start_ms)), check=True)
    print(f"training a VRAE ({args.preset} preset, {args.epochs} epochs, window {args.window}) ...", flush=True)
    began = time.monotonic()
    log_path = out / "train.log"
    command = _vrae("train", "--data", str(history), "--out", str(model), "--preset", args.preset, "--window",
                    str(args.window), "--stride", "4", "--epochs", str(args.epochs), "--threshold-method", "quantile",
                    "--quantile", str(args.quantile), "--quiet")
    with log_path.open("w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise VraeError(f"`vrae train` failed (exit {result.returncode}); see {log_path}")
    print(f"trained in {time.monotonic() - began:.0f} s -> {model}")
    return model


def _history(args: argparse.Namespace, out: Path, start_ms: int, features: Sequence[str]) -> list[StreamEvent]:
    """The clean history the model was trained on (synthesised again for a model given with --model)."""
    path = out / "history.csv"
    if args.model is not None or not path.exists():
        subprocess.run(_vrae("synth", "--out", str(path), "--series", str(args.series), "--length",
                             str(args.history), "--clean", "--interval-ms", str(INTERVAL_MS), "--seed",
                             str(FLEET_SEED), "--start", str(start_ms), "--features", ",".join(features)), check=True)
    return sorted(_read_stream(path), key=lambda e: (e.ts_ms, e.series_id))


def _synthesise(args: argparse.Namespace, out: Path, start_ms: int, features: Sequence[str]) -> list[StreamEvent]:
    path = out / "stream.csv"
    subprocess.run(_vrae("synth", "--out", str(path), "--series", str(args.series), "--length", str(args.events),
                         "--anomalies", str(args.anomalies), "--interval-ms", str(INTERVAL_MS), "--seed",
                         str(FLEET_SEED), "--start", str(start_ms), "--features", ",".join(features)), check=True)
    return sorted(_read_stream(path), key=lambda e: (e.ts_ms, e.series_id))


def _read_stream(path: Path) -> Iterator[StreamEvent]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        features = [name for name in reader.fieldnames or [] if name not in {"series_id", "timestamp", "label",
                                                                                 "anomaly_kind"}]
        for row in reader:
            yield StreamEvent(series_id=row["series_id"], ts_ms=int(row["timestamp"]),
                              values=[float(row[name]) for name in features], label=int(row["label"]),
                              kind=row["anomaly_kind"])


def _settings(args: argparse.Namespace, bootstrap: str, redis_url: str, model: Path, out: Path) -> Settings:
    run = f"demo-{int(time.time())}"
    return Settings(
        _env_file=None,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_topic=f"{run}-events", alert_topic=f"{run}-alerts",
                            dlq_topic=f"{run}-dlq", group_id=f"{run}-worker", **FAST_GROUP_JOIN),
        redis=RedisSettings(url=redis_url, key_prefix=run),
        model=ModelSettings(path=model),
        window=WindowSettings(stride=args.stride, ttl_s=3600),
        detection=DetectionSettings(mode=args.mode),
        service=ServiceSettings(metrics_port=local_services.free_port(), heartbeat_file=out / "heartbeat",
                                backoff_initial_s=0.2, backoff_max_s=2.0),
    )


def _produce(bootstrap: str, topic: str, stream: list[StreamEvent], rate: float,
             broken: bool = True) -> tuple[dict[tuple[str, int], float], float]:
    """Send every event (key = series id) at `rate` events/s, with `broken` a few bad records among them;
    returns each event's send time."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    sent_at: dict[tuple[str, int], float] = {}
    broken_at = ({len(stream) * (k + 1) // (len(BROKEN_EVENTS) + 1): body for k, body in enumerate(BROKEN_EVENTS)}
                 if broken else {})
    began = time.monotonic()
    try:
        for index, event in enumerate(stream):
            if rate > 0:
                delay_s = began + index / rate - time.monotonic()
                if delay_s > 0:
                    time.sleep(delay_s)
            body = json.dumps({"series_id": event.series_id, "ts": event.ts_ms, "values": event.values})
            sent_at[event.series_id, event.ts_ms] = time.monotonic()
            producer.send(topic, key=event.series_id.encode(), value=body.encode())
            if index in broken_at:
                producer.send(topic, key=BROKEN_KEY, value=broken_at[index])
        producer.flush()
    finally:
        producer.close()
    return sent_at, time.monotonic() - began


def _wait_until_processed(worker: BackgroundWorker, expected: int, started_s: float, timeout_s: float = 120) -> float:
    """Seconds from the first send until the worker has committed every event."""
    registry = worker.service.metrics.registry
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(sample.value for metric in registry.collect()
                   if metric.name in ("vrae_events", "vrae_invalid_events")
                   for sample in metric.samples if sample.name.endswith("_total"))
        if done >= expected:
            return time.monotonic() - started_s
        time.sleep(0.05)
    raise local_services.ServiceError(f"the worker did not process {expected} events within {timeout_s:.0f} s")


def _summary(args: argparse.Namespace, stream: list[StreamEvent], truth: GroundTruth, alerts: list[ReceivedAlert],
             sent_at: dict[tuple[str, int], float], stream_s: float, processed_s: float, worker: BackgroundWorker,
             total_s: float) -> None:
    registry = worker.service.metrics.registry
    window = worker.service.scorer.info.window
    windows = registry.get_sample_value("vrae_windows_scored_total") or 0
    print("\n── summary " + "─" * 60)
    print(f"events            {len(stream)} from {args.series} sensors, {windows:.0f} windows scored")
    print(f"throughput        {len(stream) / processed_s:,.0f} events/s end to end "
          f"(produced in {stream_s:.1f} s, all processed after {processed_s:.1f} s)")
    invalid = {sample.labels["reason"]: int(sample.value) for metric in registry.collect()
               if metric.name == "vrae_invalid_events" for sample in metric.samples
               if sample.name.endswith("_total")}
    print(f"dead letters      {sum(invalid.values())} "
          f"({', '.join(f'{reason} {count}' for reason, count in sorted(invalid.items()))})")
    if args.mode == "incidents":
        timed = _incident_summary(alerts, truth, window)
    else:
        timed = _window_summary(alerts, truth, window, args.stride)
    latencies_ms = np.array([1000 * (a.received_s - sent_at[key]) for a in timed
                             if (key := (a.document["series_id"], a.document["window_end"])) in sent_at])
    p50, p99 = (np.percentile(latencies_ms, [50, 99]) if len(latencies_ms) else (float("nan"), float("nan")))
    batches = registry.get_sample_value("vrae_batches_total") or 1
    batch_ms = 1000 * (registry.get_sample_value("vrae_batch_seconds_sum") or 0) / batches
    inference_ms = 1000 * (registry.get_sample_value("vrae_inference_seconds_sum") or 0) / batches
    print(f"worker            {batches:.0f} batches, mean {batch_ms:.0f} ms each ({inference_ms:.0f} ms inference)")
    what = "incident opened" if args.mode == "incidents" else "alert"
    print(f"latency           p50 {p50:.0f} ms, p99 {p99:.0f} ms  (event produced -> {what} received)")
    print(f"total             {total_s:.0f} s including training; files in {args.out}/")


def _incident_summary(records: list[ReceivedAlert], truth: GroundTruth, window: int) -> list[ReceivedAlert]:
    """Prints the incident lines of the summary; returns the `opened` records (what latency is taken of)."""
    opened = [r for r in records if r.document.get("phase") == "opened"]
    closed = sum(r.document.get("phase") == "closed" for r in records)
    openings = {(r.document["series_id"], r.document["window_end"]) for r in opened}
    quality = truth.evaluate_incidents(openings, window)
    print(f"incidents         {len(openings)} opened, {closed} closed (records: {len(records)}, replays included)")
    print(f"precision         {quality['precision']:.2f}  ({quality['on_anomaly']} of {len(openings)} incidents "
          "opened on an injected anomaly)")
    print(f"anomalies caught  {quality['caught']} of {quality['incidents']} injected (an incident opened on it)")
    return opened


def _window_summary(alerts: list[ReceivedAlert], truth: GroundTruth, window: int, stride: int) -> list[ReceivedAlert]:
    """Prints the per-window alert lines of the summary; returns the alerts (what latency is taken of)."""
    alerted = {(a.document["series_id"], a.document["window_end"]) for a in alerts}
    quality = truth.evaluate(alerted, window, stride)
    print(f"alerts            {len(alerts)} ({len(alerted)} distinct windows)")
    print(f"precision/recall  {quality['precision']:.2f} / {quality['recall']:.2f}  (event level: a window is "
          f"anomalous when its last event is labelled; {quality['positives']} such windows)")
    print(f"anomalies caught  {quality['caught']} of {quality['incidents']} injected (an alerted window overlaps it)")
    return alerts
