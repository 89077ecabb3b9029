"""The whole pipeline on the real broker and redis-server: events in, alerts and dead letters out."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import redis
from redis_state import state_snapshot

import worker
from vrae_model.artifact import load_artifact
from vrae_model.scoring import score_windows
from vrae_model.synth import SynthConfig, generate, write_csv
from vrae_model.windowing import due_positions
from worker.app import BackgroundWorker, build_service
from worker.detection.alerts import alert_id
from worker.tools import local_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALERT_SCHEMA = json.loads((Path(worker.__file__).parent / "schemas" / "alert.schema.json").read_text())


def synthetic_events(features: tuple[str, ...], n_series: int = 2, length: int = 80, seed: int = 7):
    data = generate(SynthConfig(n_series=n_series, length=length, features=features, anomalies_per_series=1,
                                seed=seed, interval_ms=1000))
    events = [(s.series_id, int(t), [float(v) for v in row]) for s in data.series
              for t, row in zip(s.timestamps, s.values)]
    return data, sorted(events, key=lambda e: (e[1], e[0]))


def expected_scores(model_path: Path, data, stride: int) -> dict[str, float]:
    """Offline truth: every due window of every series scored by vrae_model, keyed by alert id."""
    artifact = load_artifact(model_path)
    window = artifact.metadata["window"]
    expected = {}
    for series in data.series:
        ends = due_positions(len(series.timestamps), window, stride)
        windows = np.stack([series.values[end - window + 1:end + 1] for end in ends]).astype(np.float32)
        scores = score_windows(artifact, windows)["anomaly_score"]
        for end, score in zip(ends, scores):
            key = alert_id(series.series_id, int(series.timestamps[end - window + 1]), int(series.timestamps[end]))
            expected[key] = float(score)
    return expected


def test_worker_streams_alerts_and_dead_letters_then_commits(make_settings, kafka_tools, tiny_model) -> None:
    settings = make_settings(mode="windows")
    data, events = synthetic_events(tiny_model.features)
    bad = [(b"pump-x", b"{not json"), (b"pump-x", json.dumps({"series_id": "pump-x", "ts": 1,
                                                                "features": {"rpm": 1.0}}).encode())]
    produced = kafka_tools.produce_events(settings.kafka.input_topic, events[:60])
    produced += kafka_tools.produce(settings.kafka.input_topic, bad)
    produced += kafka_tools.produce_events(settings.kafka.input_topic, events[60:])

    expected = expected_scores(tiny_model.path, data, stride=1)
    # A threshold in the widest gap around the median: about half the windows alert, none is borderline.
    ranked = sorted(expected.values())
    middle = ranked[len(ranked) // 4: 3 * len(ranked) // 4 + 1]
    gap, low = max((b - a, a) for a, b in zip(middle, middle[1:]))
    settings.model.threshold = low + gap / 2
    sure = {key for key, score in expected.items() if score >= settings.model.threshold}
    assert gap > 1e-5 and len(sure) > 10

    with BackgroundWorker(build_service(settings)):
        alerts = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= len(sure))
        dead = kafka_tools.read(settings.kafka.dlq_topic, lambda got: len(got) >= 2)
        committed = {}
        for _ in range(100):
            committed = kafka_tools.committed(settings.kafka.group_id)
            if committed.get((settings.kafka.input_topic, 0)) == produced:
                break

    documents = [json.loads(record.value) for record in alerts]
    for document in documents:
        jsonschema.validate(document, ALERT_SCHEMA)
        assert document["anomaly_score"] == pytest.approx(expected[document["alert_id"]], abs=1e-5)
    ids = {document["alert_id"] for document in documents}
    assert ids == sure
    assert all(record.key == document["series_id"].encode() for record, document in zip(alerts, documents))

    assert [record.value for record in dead] == [value for _, value in bad]
    headers = [dict(record.headers) for record in dead]
    assert [h["error"] for h in headers] == [b"not_json", b"unknown_feature"]
    assert [int(h["source_offset"]) for h in headers] == [60, 61]
    assert all(h["source_topic"] == settings.kafka.input_topic.encode() for h in headers)
    assert committed[(settings.kafka.input_topic, 0)] == produced


@pytest.mark.parametrize("crash", ["after delivery", "after the state write"])
def test_crash_before_commit_replays_to_the_same_window_state_and_alert_ids(make_settings, kafka_tools, redis_url,
                                                                         tiny_model, crash: str) -> None:
    """The worker dies after delivering a batch, before (or after) writing its state, before its offsets
    are committed. The next worker replays the batch: before the write it delivers the same alert ids
    again; after it, nothing (they are out). Either way the state ends as a fault-free run leaves it."""
    settings = make_settings(mode="windows")
    settings.model.threshold = 0.0  # every scored window alerts: the replay must reproduce all of them
    _, events = synthetic_events(tiny_model.features, length=40)
    produced = kafka_tools.produce_events(settings.kafka.input_topic, events)

    crashed = build_service(settings)
    records = []
    for _ in range(100):
        records += crashed.source.poll()
        if len(records) >= produced:
            break
    processed = crashed.pipeline.process(crashed.pipeline.prepare(records))
    crashed.sink.send(processed.messages)
    if crash == "after the state write":
        processed.state.apply()
    crashed.close()
    first = processed.report
    assert len(first.alerts) == 2 * (40 - tiny_model.window + 1)
    client = redis.Redis.from_url(redis_url)
    expected = 2 * len(first.alerts) if crash == "after delivery" else len(first.alerts)

    with BackgroundWorker(build_service(settings)) as restarted:
        alerts = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= expected, timeout_s=30)
        local_services.wait_until(lambda: kafka_tools.committed(settings.kafka.group_id).get(
            (settings.kafka.input_topic, 0)) == produced, 30, "the replayed batch committed")
        replayed = restarted.service.metrics.registry.get_sample_value("vrae_events_total", {"outcome": "replayed"})
    state = state_snapshot(client)
    client.flushall()
    reference = make_settings(mode="windows")
    kafka_tools.produce_events(reference.kafka.input_topic, events)
    with BackgroundWorker(build_service(reference)):
        local_services.wait_until(lambda: kafka_tools.committed(reference.kafka.group_id).get(
            (reference.kafka.input_topic, 0)) == produced, 30, "the fault-free run")
    ids = [json.loads(record.value)["alert_id"] for record in alerts]
    first_ids = [alert.alert_id for alert in first.alerts]
    assert ids[:len(first_ids)] == first_ids
    assert sorted(ids[len(first_ids):]) == (sorted(first_ids) if crash == "after delivery" else [])
    assert state_snapshot(client) == state
    assert replayed == (produced if crash == "after the state write" else None)


def test_vrae_score_and_the_worker_score_the_same_windows(make_settings, kafka_tools, tiny_model,
                                                          tmp_path: Path) -> None:
    stride = 3
    settings = make_settings(stride=stride, mode="windows")
    settings.model.threshold = 0.0  # publish every scored window
    data, events = synthetic_events(tiny_model.features, length=50, seed=11)
    csv_path = write_csv(data, tmp_path / "stream.csv")
    scores_path = tmp_path / "scores.csv"
    subprocess.run([sys.executable, "-m", "vrae_model.cli", "score", "--model", str(tiny_model.path), "--data",
                    str(csv_path), "--stride", str(stride), "--out", str(scores_path)], check=True,
                   capture_output=True)
    with scores_path.open() as handle:
        offline = {(row["series_id"], int(row["timestamp"])): float(row["score"]) for row in csv.DictReader(handle)}

    kafka_tools.produce_events(settings.kafka.input_topic, events)
    with BackgroundWorker(build_service(settings)):
        alerts = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= len(offline))
    online = {(d["series_id"], d["window_end"]): d["score"] for d in (json.loads(r.value) for r in alerts)}
    assert online.keys() == offline.keys()
    for key, score in offline.items():
        assert online[key] == pytest.approx(score, rel=1e-5, abs=1e-7)
