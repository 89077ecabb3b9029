"""Static checks of the monitoring profile: Prometheus finds every worker, Grafana's dashboard only
queries metrics the worker (or the Kafka exporter) really exports."""

import json
import re
from pathlib import Path

import pytest
import yaml

from worker.metrics import Metrics

SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
KAFKA_EXPORTER_METRICS = {"kafka_consumergroup_lag"}


@pytest.fixture(scope="module")
def compose(repo: Path) -> dict:
    return yaml.safe_load((repo / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dashboard(repo: Path) -> dict:
    return json.loads((repo / "deploy/grafana/dashboards/vrae-worker.json").read_text())


def exported_series_names() -> set[str]:
    """Names a PromQL query can use for the worker's metrics (counter `_total`, histogram `_bucket`...)."""
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
    return names


def queried_metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(vrae_[a-z_]+|kafka_[a-z_]+|up)\b(?=\s*[{\[)])", expression))


def test_prometheus_scrapes_every_worker_replica(repo: Path, compose: dict) -> None:
    config = yaml.safe_load((repo / "deploy/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    discovery = jobs["vrae-worker"]["dns_sd_configs"][0]
    assert discovery["names"] == ["worker"]
    assert discovery["port"] == int(compose["services"]["worker"]["environment"]["VRAE_SERVICE__METRICS_PORT"])
    assert jobs["kafka-exporter"]["static_configs"][0]["targets"] == ["kafka-exporter:9308"]


def test_grafana_provisioning_points_at_the_mounted_dashboards(repo: Path, compose: dict, dashboard: dict) -> None:
    provider = yaml.safe_load((repo / "deploy/grafana/provisioning/dashboards/vrae.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = compose["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    datasources = yaml.safe_load((repo / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {datasource["uid"]}


def test_dashboard_queries_only_metrics_that_exist(dashboard: dict) -> None:
    known = exported_series_names() | KAFKA_EXPORTER_METRICS | {"up"}
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= queried_metric_names(target["expr"])
    assert queried, "the dashboard queries something"
    assert sorted(queried - known) == []


def test_dashboard_shows_throughput_lag_alerts_and_latency(dashboard: dict) -> None:
    expressions = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    for needed in ("vrae_events_total", "kafka_consumergroup_lag", "vrae_alerts_total", "vrae_batch_seconds_bucket"):
        assert needed in expressions
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction_reads_promql() -> None:
    expression = 'histogram_quantile(0.99, sum(rate(vrae_batch_seconds_bucket[5m])) by (le)) + up{job="x"}'
    assert queried_metric_names(expression) == {"vrae_batch_seconds_bucket", "up"}
