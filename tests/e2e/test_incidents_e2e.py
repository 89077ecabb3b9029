"""Incidents mode end to end: real broker and redis-server, one injected fault -> one opened + one closed."""

import json
from pathlib import Path

import jsonschema
import pytest
import redis

import worker
from vrae_model.synth import SynthConfig, generate
from worker.app import BackgroundWorker, build_service
from worker.state.redis_store import detector_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMA = json.loads((Path(worker.__file__).parent / "schemas" / "incident.schema.json").read_text())


def test_one_fault_becomes_one_incident_and_scores_reach_their_topic(make_settings, kafka_tools, tiny_model,
                                                                    redis_url: str) -> None:
    settings = make_settings()  # the defaults: incidents mode, open at surprise 3
    settings.detection.scores_topic = f"{settings.kafka.alert_topic}-scores"
    # The tiny model saw 400 minutes of these machines; past that their daily cycle drifts off what it
    # knows, and an incident opened by the fault stays open until the series settles into it.
    settings.detection.settle_hours = 1.0
    # Normal data like the tiny model's training data, longer than the series' learning period (as many
    # windows as trained the model), then a gross fault on the first feature.
    history = generate(SynthConfig(n_series=1, length=900, features=tiny_model.features, clean=True, seed=1))
    series_id, series = history.series[0].series_id, history.series[0]
    timestamps, values = series.timestamps, series.values.copy()
    values[700:703, 0] += 50.0
    events = [(series_id, int(t), [float(v) for v in row]) for t, row in zip(timestamps, values)]
    kafka_tools.produce_events(settings.kafka.input_topic, events)

    n_windows = len(events) - tiny_model.window + 1
    with BackgroundWorker(build_service(settings)):
        scores = kafka_tools.read(settings.detection.scores_topic, lambda got: len(got) >= n_windows)
        records = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= 2, timeout_s=10)

    documents = [json.loads(record.value) for record in records]
    assert [d["phase"] for d in documents] == ["opened", "closed"]
    assert documents[0]["incident_id"] == documents[1]["incident_id"]
    # The first window holding the fault ends at event 700, and the spike column judges that event as it
    # arrives (a gross spike on its feature): that window opens, with no delay.
    assert documents[0]["window_end"] == int(timestamps[700])
    assert documents[1]["top_features"][0]["name"] == tiny_model.features[0]
    for document in documents:
        jsonschema.validate(document, SCHEMA)
    assert len(scores) == n_windows
    stored = redis.Redis.from_url(redis_url).get(detector_key(settings.redis.key_prefix, series_id))
    assert stored is not None
