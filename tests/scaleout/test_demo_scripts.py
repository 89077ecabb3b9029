"""The compose demo's simulator and alert printer, run as the containers run them, on the real broker."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from scaleout_support import topic_record_count
from worker.tools import local_services

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def script_env(bootstrap_servers: str, **topics: str) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
    return {**clean, "VRAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
            **{f"VRAE_KAFKA__{name.upper()}": value for name, value in topics.items()}}


def test_simulator_sends_the_requested_number_of_keyed_events(bootstrap_servers: str, tmp_path: Path) -> None:
    topic = f"sim-{uuid.uuid4().hex[:8]}"
    local_services.create_topics(bootstrap_servers, [topic], partitions=3)
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy/simulator.py"), "--series", "4", "--rate", "2000", "--max-events", "60",
         "--anomaly-rate", "0.01"],
        env=script_env(bootstrap_servers, input_topic=topic), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sent 60 events" in result.stderr
    assert topic_record_count(bootstrap_servers, topic) == 60


def test_alert_printer_prints_one_line_per_alert(bootstrap_servers: str, tmp_path: Path) -> None:
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    local_services.create_topics(bootstrap_servers, [topic])
    alert = {"alert_id": "id-1", "series_id": "pump-7", "window_end_iso": "2026-01-01T00:10:00.000Z",
             "anomaly_score": 0.9999, "top_features": [{"name": "temp", "share": 0.8}]}
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
    producer.send(topic, json.dumps(alert).encode())
    producer.send(topic, b"not json")
    producer.flush()
    producer.close()
    printer = subprocess.Popen([sys.executable, str(REPO / "deploy/alert_printer.py"), "--from-beginning"],
                               env=script_env(bootstrap_servers, alert_topic=topic), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in printer.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("not an alert"):
                break
    finally:
        printer.terminate()
        printer.wait(timeout=10)
    assert "2026-01-01T00:10:00.000Z  pump-7  anomaly_score=0.9999  top: temp=80%  id=id-1" in lines
    assert lines[-1] == "not an alert: b'not json'"
