"""Static checks of deploy/k8s: parses, known kinds, real settings, probes, resources, KEDA bounds."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from worker.config import ServiceSettings

API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}


@pytest.fixture(scope="module")
def k8s_dir(repo: Path) -> Path:
    return repo / "deploy/k8s"


@pytest.fixture(scope="module")
def objects(k8s_dir: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(k8s_dir.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


@pytest.fixture(scope="module")
def deployment(objects: dict) -> dict:
    return objects[("Deployment", "vrae-worker")]


@pytest.fixture(scope="module")
def container(deployment: dict) -> dict:
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    return worker


@pytest.fixture(scope="module")
def scaled_object(objects: dict) -> dict:
    return objects[("ScaledObject", "vrae-worker")]


def test_every_object_has_a_known_kind_and_api_version(objects: dict) -> None:
    for (kind, name), document in objects.items():
        assert kind in API_VERSIONS, f"{kind}/{name}: unexpected kind"
        assert document["apiVersion"] == API_VERSIONS[kind], f"{kind}/{name}"


def test_kustomization_lists_every_manifest(k8s_dir: Path) -> None:
    kustomization = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    manifests = {path.name for path in k8s_dir.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_into_one_namespace(k8s_dir: Path) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(k8s_dir)], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert len(documents) == len({path for path in k8s_dir.glob("*.yaml")}) - 1
    namespaced = [doc for doc in documents if doc["kind"] != "Namespace"]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {"vrae-stream"}


def test_config_and_secret_keys_are_real_worker_settings(objects: dict, worker_env_names: frozenset[str]) -> None:
    keys = set(objects[("ConfigMap", "vrae-worker")]["data"])
    keys |= set(objects[("Secret", "vrae-worker")]["stringData"])
    assert keys and all(key.startswith("VRAE_") for key in keys)
    assert sorted(keys - worker_env_names) == []


def test_redis_credentials_live_in_the_secret_not_the_config_map(objects: dict) -> None:
    assert "VRAE_REDIS__URL" in objects[("Secret", "vrae-worker")]["stringData"]
    assert not any("PASSWORD" in key or "REDIS__URL" in key for key in objects[("ConfigMap", "vrae-worker")]["data"])


def test_worker_reads_its_settings_from_the_config_map_and_secret(container: dict, objects: dict) -> None:
    sources = {(kind, ref["name"]) for source in container["envFrom"]
               for kind, ref in (("ConfigMap", source.get("configMapRef")), ("Secret", source.get("secretRef")))
               if ref}
    assert sources == {("ConfigMap", "vrae-worker"), ("Secret", "vrae-worker")}
    assert all(source in objects for source in sources)
    assert "env" not in container, "one place for settings: the ConfigMap and the Secret"


def test_probes_call_vrae_worker_check(container: dict) -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["vrae-worker", "check"], probe
        # `check` skips torch, but the interpreter's start-up still needs room on a throttled CPU.
        assert container[probe]["timeoutSeconds"] >= 3, probe


def test_termination_grace_outlasts_the_workers_own_shutdown_bound(deployment: dict) -> None:
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > ServiceSettings().shutdown_timeout_s, "SIGKILL would cut the final commit short"


def test_resources_are_requested_and_limited(objects: dict) -> None:
    for kind, name in (("Deployment", "vrae-worker"), ("Job", "vrae-train")):
        for one in objects[(kind, name)]["spec"]["template"]["spec"]["containers"]:
            resources = one["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), f"{name}/{one['name']}"
            assert "memory" in resources["limits"], f"{name}/{one['name']}"


def test_pods_run_as_non_root_without_privilege_escalation(objects: dict) -> None:
    for kind, name in (("Deployment", "vrae-worker"), ("Job", "vrae-train")):
        pod = objects[(kind, name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for one in pod["containers"]:
            assert one["securityContext"]["allowPrivilegeEscalation"] is False
            assert one["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_worker_mounts_the_model_read_only_where_the_config_points(
    deployment: dict, container: dict, objects: dict
) -> None:
    model_path = Path(objects[("ConfigMap", "vrae-worker")]["data"]["VRAE_MODEL__PATH"])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts[str(model_path.parent)]["readOnly"] is True
    # The root filesystem is read-only; the heartbeat file and torch need a writable /tmp.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    claims = {volume["persistentVolumeClaim"]["claimName"] for volume in volumes
              if "persistentVolumeClaim" in volume}
    assert claims == {"vrae-model"} and ("PersistentVolumeClaim", "vrae-model") in objects


def test_selectors_match_the_worker_pods(deployment: dict, objects: dict) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects[("Service", "vrae-worker-metrics")]["spec"]["selector"].items() <= labels.items()
    assert objects[("PodDisruptionBudget", "vrae-worker")]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_keda_owns_the_replica_count(deployment: dict, scaled_object: dict) -> None:
    assert "replicas" not in deployment["spec"], "a fixed replica count fights the autoscaler on every apply"
    target = scaled_object["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_keda_scales_on_lag_of_the_workers_group_up_to_the_partition_count(
    scaled_object: dict, objects: dict, repo: Path
) -> None:
    config = objects[("ConfigMap", "vrae-worker")]["data"]
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == config["VRAE_KAFKA__GROUP_ID"]
    assert metadata["topic"] == config["VRAE_KAFKA__INPUT_TOPIC"]
    assert metadata["bootstrapServers"] == config["VRAE_KAFKA__BOOTSTRAP_SERVERS"]
    assert int(metadata["lagThreshold"]) > 0 and metadata["allowIdleConsumers"] == "false"
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    partitions = re.fullmatch(r"\$\{INPUT_PARTITIONS:-(\d+)\}",
                              compose["services"]["kafka-init"]["environment"]["INPUT_PARTITIONS"])
    assert partitions and scaled_object["spec"]["maxReplicaCount"] == int(partitions[1])
    assert 1 <= scaled_object["spec"]["minReplicaCount"] <= scaled_object["spec"]["maxReplicaCount"]
