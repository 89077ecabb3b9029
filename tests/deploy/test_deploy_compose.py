"""Static checks of docker-compose.yml: no Docker engine is needed (nor available in CI).

The file is rendered the way `docker compose config` would for an empty `.env` (every `${VAR:-x}`
becomes x), then checked for what breaks a stack at 3 a.m.: floating tags, missing healthchecks,
start-order holes, settings the worker does not know, volumes nobody declared.
"""

import re
from pathlib import Path

import pytest
import yaml

from worker.config import ServiceSettings

COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def render_defaults(text: str) -> str:
    """Compose interpolation with no variables set: `${X:-d}` -> d, `$$` -> `$`."""
    return INTERPOLATION.sub(lambda match: match["default"] or "", text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose_text(repo: Path) -> str:
    return (repo / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(render_defaults(compose_text))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def depends_on(service: dict) -> dict[str, str]:
    value = service.get("depends_on") or {}
    if isinstance(value, list):
        return {name: "service_started" for name in value}
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def test_every_variable_has_a_default_so_up_works_without_env_file(compose_text: str) -> None:
    without_default = [m["name"] for m in INTERPOLATION.finditer(compose_text) if m["default"] is None]
    assert without_default == []
    assert "${" not in render_defaults(compose_text)


def test_every_image_tag_is_pinned(services: dict) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: give every service an image name (built ones too, so they are tagged)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"


def test_kafka_runs_kraft_with_a_healthcheck(services: dict) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])
    assert any(volume.endswith(":" + env["KAFKA_LOG_DIRS"]) for volume in kafka["volumes"])


def test_long_running_dependencies_have_healthchecks(services: dict) -> None:
    for name in ("kafka", "redis", "worker", "prometheus"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"] >= 3, name


def test_demo_scripts_opt_out_of_the_worker_images_healthcheck(services: dict) -> None:
    for name in ("simulator", "alert-printer"):
        assert services[name]["image"] == services["worker"]["image"]
        assert services[name]["healthcheck"] == {"disable": True}, f"{name} has no heartbeat: never healthy"


def test_redis_has_a_password_and_append_only_persistence(services: dict) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--requirepass"]
    assert options["--maxmemory-policy"] == "noeviction"
    # The healthcheck must authenticate too, or it reports healthy only on a password-less Redis.
    assert env_of(redis)["REDISCLI_AUTH"] == options["--requirepass"]
    worker_url = env_of(services["worker"])["VRAE_REDIS__URL"]
    assert f":{options['--requirepass']}@redis:" in worker_url


def test_depends_on_targets_exist_with_valid_conditions(services: dict) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in COMPOSE_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is one-shot; it must not restart"


def test_profiles_never_hide_a_dependency_of_the_default_stack(services: dict) -> None:
    for name, service in services.items():
        if service.get("profiles"):
            continue
        for target in depends_on(service):
            assert not services[target].get("profiles"), f"{name} needs {target}, which is behind a profile"


def test_workers_start_only_after_kafka_redis_topics_and_model(services: dict) -> None:
    assert depends_on(services["worker"]) == {
        "kafka": "service_healthy",
        "kafka-init": "service_completed_successfully",
        "redis": "service_healthy",
        "trainer": "service_completed_successfully",
    }


def test_stop_grace_outlasts_the_workers_own_shutdown_bound(services: dict) -> None:
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > ServiceSettings().shutdown_timeout_s


def test_two_worker_replicas_share_one_consumer_group(services: dict) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    # A fixed container name or host port would stop the second replica from starting.
    assert "container_name" not in worker and "ports" not in worker
    assert env_of(worker)["VRAE_KAFKA__GROUP_ID"]
    partitions = int(env_of(services["kafka-init"])["INPUT_PARTITIONS"])
    assert partitions >= worker["deploy"]["replicas"]


def test_vrae_variables_are_real_worker_settings(services: dict, worker_env_names: frozenset[str]) -> None:
    used = {key for service in services.values() for key in env_of(service) if key.startswith("VRAE_")}
    assert used, "the worker is configured through VRAE_ variables"
    assert sorted(used - worker_env_names) == []


def test_topic_names_agree_between_init_job_and_clients(services: dict) -> None:
    init = env_of(services["kafka-init"])
    for name in ("worker", "simulator", "alert-printer"):
        env = env_of(services[name])
        assert env["VRAE_KAFKA__INPUT_TOPIC"] == init["INPUT_TOPIC"], name
        assert env["VRAE_KAFKA__ALERT_TOPIC"] == init["ALERT_TOPIC"], name
        assert env["VRAE_KAFKA__DLQ_TOPIC"] == init["DLQ_TOPIC"], name
        assert env["VRAE_KAFKA__BOOTSTRAP_SERVERS"] == init["BOOTSTRAP_SERVERS"], name


def test_trainer_writes_the_model_volume_the_workers_read(services: dict) -> None:
    trainer, worker = services["trainer"], services["worker"]
    model_dir = str(Path(env_of(worker)["VRAE_MODEL__PATH"]).parent)
    assert f"models:{model_dir}" in trainer["volumes"]
    assert f"models:{model_dir}:ro" in worker["volumes"]
    assert Path(env_of(trainer)["MODEL_PATH"]) == Path(env_of(worker)["VRAE_MODEL__PATH"])
    assert trainer["build"]["target"] == "trainer" and services["worker"]["build"]["target"] == "worker"


def test_every_trainer_variable_is_read_by_the_train_script(services: dict, repo: Path) -> None:
    script = (repo / "deploy/train-model.sh").read_text()
    unread = [name for name in env_of(services["trainer"]) if f"${{{name}" not in script]
    assert unread == []


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict, services: dict, repo: Path) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                # ./data is the optional drop-in folder for TRAIN_CSV; Docker creates it when absent.
                assert source == "./data" or (repo / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_monitoring_services_sit_behind_the_monitoring_profile(services: dict) -> None:
    for name in ("prometheus", "grafana", "kafka-exporter"):
        assert services[name]["profiles"] == ["monitoring"], name


def test_topic_script_creates_input_alert_and_dlq_topics(repo: Path) -> None:
    script = (repo / "deploy/kafka/create-topics.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
    for variable in ("INPUT_TOPIC", "ALERT_TOPIC", "DLQ_TOPIC"):
        assert f'create_topic "${variable}"' in script
    assert "--if-not-exists" in script
