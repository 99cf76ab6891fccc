"""The Kubernetes manifests under k8s/, rendered per overlay and checked offline.

No API server is reachable here, so "a real API server would accept them" is
checked against the schemas one would enforce (tests/k8s_validation.py), and the
rest against the project's own contracts: deploy/serve.yaml, Settings, the
capacity the autoscaling bounds need.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from contracts.settings import Settings
from tests.k8s.k8s_validation import (
    DELETE,
    K8S_DIR,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    REPO,
    mutated,
    object_id,
    pod_templates,
    render,
    validate_manifest,
)

SERVE_CONFIG = REPO / "deploy" / "serve.yaml"


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(overlay name, its rendered objects)."""
    return request.param, render(K8S_DIR / "overlays" / request.param)


@pytest.fixture(scope="module")
def gpu_objects() -> list[dict[str, Any]]:
    return render(K8S_DIR / "overlays" / "gpu")


def find(objects: list[dict[str, Any]], kind: str, name_prefix: str = "") -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"].startswith(name_prefix)
    ]
    assert len(matches) == 1, f"expected one {kind} named {name_prefix}*, got {matches}"
    return matches[0]


def ray_cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"].get("rayClusterConfig") or obj["spec"]["rayClusterSpec"]


def all_pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod the overlay creates, built-in or Ray."""
    specs = []
    for obj in objects:
        if obj["kind"] in ("RayService", "RayJob", "RayCluster"):
            for where, template in pod_templates(obj):
                specs.append((f"{object_id(obj)} {where}", template["spec"]))
        elif "template" in obj.get("spec", {}):
            specs.append((object_id(obj), obj["spec"]["template"]["spec"]))
    return specs


def decoded(obj: dict[str, Any]) -> dict[str, str]:
    """The data of a ConfigMap or Secret, base64 undone."""
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return data | obj.get("stringData", {})
    return dict(obj.get("data", {}))


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from envFrom and literal env values."""
    by_name = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= decoded(by_name[("ConfigMap", source["configMapRef"]["name"])])
        if "secretRef" in source:
            env |= decoded(by_name[("Secret", source["secretRef"]["name"])])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
    return env


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings as a process with exactly this TAILOR_*/REDIS_URL environment reads them."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in list(os.environ):
            if variable.startswith("TAILOR_") or variable == "REDIS_URL":
                patch.delenv(variable)
        for variable, value in env.items():
            patch.setenv(variable, value)
        return Settings()


# --- schemas: what an API server would accept ------------------------------------------


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates(
    overlay: tuple[str, list[dict[str, Any]]], kubernetes_version: str
) -> None:
    name, objects = overlay
    kinds = {obj["kind"] for obj in objects}
    assert {"RayService", "RayJob", "StatefulSet", "Service", "Secret", "ConfigMap"} <= kinds
    errors = [error for obj in objects for error in validate_manifest(obj, kubernetes_version)]
    assert errors == [], f"overlay {name} on Kubernetes {kubernetes_version}:\n" + "\n".join(
        errors
    )


# (object, dotted path, new value or DELETE, what the error says). Each is a
# mistake someone could make in these files; the same check must reject it.
HEAD = "spec.rayClusterConfig.headGroupSpec.template.spec"
WORKER = "spec.rayClusterConfig.workerGroupSpecs.0"
DELIBERATE_ERRORS = {
    "rayservice-misspelled-field": (
        ("RayService", "tailor"), "spec.serveConfigv2", "x", "Additional properties"
    ),
    "rayservice-worker-group-without-name": (
        ("RayService", "tailor"), f"{WORKER}.groupName", DELETE, "'groupName' is a required"
    ),
    "rayservice-replicas-as-string": (
        ("RayService", "tailor"), f"{WORKER}.maxReplicas", "4", "is not of type 'integer'"
    ),
    "rayservice-bad-memory-quantity": (
        ("RayService", "tailor"),
        f"{WORKER}.template.spec.containers.0.resources.limits.memory",
        "48 Gi",
        "does not match",
    ),
    "rayservice-managed-by-unknown-controller": (
        ("RayService", "tailor"), "spec.managedBy", "me", "managedBy field value must be"
    ),
    "rayservice-duplicate-container-name": (
        ("RayService", "tailor"), f"{HEAD}.containers.1", "DUPLICATE_FIRST", "duplicate entry"
    ),
    "rayjob-unknown-upscaling-mode": (
        ("RayJob", "tailor-learners"),
        "spec.rayClusterSpec.autoscalerOptions.upscalingMode",
        "Fast",
        "is not one of",
    ),
    "rayjob-backoff-limit-overflows-int32": (
        ("RayJob", "tailor-learners"), "spec.backoffLimit", 2**31, "is not a 'int32'"
    ),
    "statefulset-replicas-as-string": (
        ("StatefulSet", "tailor-redis"), "spec.replicas", "one", "is not of type"
    ),
    "service-misspelled-field": (
        ("Service", "tailor-redis"), "spec.selecter", {}, "Additional properties"
    ),
}


@pytest.mark.parametrize("case", DELIBERATE_ERRORS, ids=list(DELIBERATE_ERRORS))
def test_deliberate_error_is_rejected(gpu_objects: list[dict[str, Any]], case: str) -> None:
    (kind, name), path, value, expected = DELIBERATE_ERRORS[case]
    original = find(gpu_objects, kind, name)
    if value == "DUPLICATE_FIRST":  # a second container named like the first
        first = original["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        value = {"name": first["containers"][0]["name"], "image": "busybox:1"}
    version = KUBERNETES_VERSIONS[-1]
    assert validate_manifest(original, version) == []
    errors = validate_manifest(mutated(original, path, value), version)
    assert any(expected in error for error in errors), errors


def test_pod_field_unknown_to_older_kubernetes_is_rejected_for_it(
    gpu_objects: list[dict[str, Any]],
) -> None:
    # `hostnameOverride` is in KubeRay's pod template schema but not in Kubernetes
    # 1.30's PodSpec: the PodTemplate check against each version catches it.
    rayservice = find(gpu_objects, "RayService", "tailor")
    changed = mutated(rayservice, f"{WORKER}.template.spec.hostnameOverride", "generator")
    oldest, newest = KUBERNETES_VERSIONS
    assert validate_manifest(changed, newest) == []
    errors = validate_manifest(changed, oldest)
    assert any("hostnameOverride" in error for error in errors), errors


# --- one source of truth with local runs ------------------------------------------


def test_serve_config_v2_equals_deploy_serve_yaml(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    rayservice = find(objects, "RayService", "tailor")
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load(SERVE_CONFIG.read_text()), (
        f"overlay {name}: serveConfigV2 differs from deploy/serve.yaml; copy the file "
        "into k8s/base/rayservice.yaml (indented under `serveConfigV2: |`)"
    )


def test_serve_config_leaves_generator_resources_to_settings() -> None:
    # deploy/serve.yaml runs on a CPU laptop and on GPU clusters alike: the
    # Generator's num_cpus/num_gpus come from TAILOR_REPLICA_NUM_CPUS/_GPUS, which a
    # ray_actor_options here would override; args would override every overlay's env.
    application = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]
    generator = next(d for d in application["deployments"] if d["name"] == "Generator")
    assert "ray_actor_options" not in generator
    assert application.get("args", {}) == {}


def accepted_env_names() -> set[str]:
    """Environment variables Settings reads: its prefix + field name, or the aliases."""
    prefix = Settings.model_config["env_prefix"]
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(prefix + field_name)
    return {name.upper() for name in names}


def settings_env_names(objects: list[dict[str, Any]]) -> set[str]:
    """Every TAILOR_* / REDIS_URL name the overlay sets: ConfigMap and Secret keys
    and container env entries."""
    names: set[str] = set()
    for obj in objects:
        if obj["kind"] in ("ConfigMap", "Secret"):
            names |= set(decoded(obj))
    for _, spec in all_pod_specs(objects):
        for container in spec["containers"]:
            names |= {variable["name"] for variable in container.get("env", [])}
    return {name for name in names if name.startswith("TAILOR_") or name == "REDIS_URL"}


def test_env_names_check_catches_a_misspelled_setting() -> None:
    assert "TAILOR_REPLICA_NUM_GPUS" in accepted_env_names()
    assert "REDIS_URL" in accepted_env_names()
    assert "TAILOR_REPLICA_NUM_GPU" not in accepted_env_names()


def test_env_names_in_manifests_are_settings_fields(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    used = settings_env_names(objects)
    assert {"REDIS_URL", "TAILOR_API_KEYS", "TAILOR_ADAPTER_STORE"} <= used
    unknown = used - accepted_env_names()
    assert unknown == set(), f"overlay {name} sets names Settings ignores: {sorted(unknown)}"


def test_every_ray_container_gets_valid_settings(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    for ray_kind, ray_name in (("RayService", "tailor"), ("RayJob", "tailor-learners")):
        for where, template in pod_templates(find(objects, ray_kind, ray_name)):
            # Raises on any value Settings refuses.
            settings = settings_from_env(container_env(objects, template["spec"]["containers"][0]))
            assert settings.redis_url == "redis://tailor-redis:6379/0", where
            assert settings.adapter_store, f"{name} {ray_kind} {where}: no adapter store"
            if name == "gpu":
                assert settings.device == "cuda"
                assert settings.base_model == "/models/base"
                assert settings.adapter_store.startswith("s3://")
            else:
                assert settings.device == "cpu"


# --- wiring: references, resources, probes --------------------------------------------


def test_references_resolve(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    present = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
    missing = []
    for where, spec in all_pod_specs(objects):
        for volume in spec.get("volumes", []):
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in present:
                missing.append(f"{where}: ConfigMap {volume['configMap']['name']}")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in present:
                missing.append(f"{where}: PersistentVolumeClaim {claim}")
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                for ref_field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref_field in source and (kind, source[ref_field]["name"]) not in present:
                        missing.append(f"{where}: {kind} {source[ref_field]['name']}")
            for variable in container.get("env", []):
                for ref_field, kind in (
                    ("configMapKeyRef", "ConfigMap"),
                    ("secretKeyRef", "Secret"),
                ):
                    ref = variable.get("valueFrom", {}).get(ref_field)
                    if ref and ref["key"] not in decoded(present.get((kind, ref["name"]), {})):
                        missing.append(f"{where}: {kind} {ref['name']} key {ref['key']}")
    assert missing == [], f"overlay {name} refers to objects it does not create: {missing}"


def test_redis_service_selects_the_redis_pods(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    service = find(objects, "Service", "tailor-redis")
    statefulset = find(objects, "StatefulSet", "tailor-redis")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    policy = find(objects, "NetworkPolicy", "tailor-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Every Ray pod carries the label the NetworkPolicy lets in.
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for where, template in [
        (where, template)
        for obj in objects
        if obj["kind"] in ("RayService", "RayJob")
        for where, template in pod_templates(obj)
    ]:
        assert allowed.items() <= template["metadata"]["labels"].items(), where


def test_redis_is_durable_and_never_evicts(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    conf = decoded(find(objects, "ConfigMap", "tailor-redis-config"))["redis.conf"]
    directives = {
        line.split()[0]: line.split(maxsplit=1)[1]
        for line in conf.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert directives["appendonly"] == "yes"
    assert directives["maxmemory-policy"] == "noeviction"
    statefulset = find(objects, "StatefulSet", "tailor-redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][1:3] == ["--appendfsync", "$(TAILOR_REDIS_FSYNC)"]
    fsync = next(v for v in container["env"] if v["name"] == "TAILOR_REDIS_FSYNC")
    settings = decoded(find(objects, "ConfigMap", "tailor-settings"))
    assert settings[fsync["valueFrom"]["configMapKeyRef"]["key"]] == (
        "always" if name == "gpu" else "everysec"
    )
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == directives["dir"]


def test_ray_heads_reserve_no_cpus(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    for obj in objects:
        if obj["kind"] in ("RayService", "RayJob"):
            params = ray_cluster_spec(obj)["headGroupSpec"]["rayStartParams"]
            assert params["num-cpus"] == "0", object_id(obj)


def _cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def worker_capacity(group: dict[str, Any]) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees in one pod of a worker group: rayStartParams, else limits."""
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    params = group.get("rayStartParams", {})
    cpus = _cpus(params.get("num-cpus", limits["cpu"]))
    gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return cpus, gpus


def test_autoscaling_bounds_fit_the_worker_groups(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    settings = settings_from_env(decoded(find(objects, "ConfigMap", "tailor-settings")))
    # Serve: at max replicas, Ingress + Generator fit into maxReplicas workers, and
    # one Generator replica fits into one worker.
    rayservice = find(objects, "RayService", "tailor")
    (serve_group,) = ray_cluster_spec(rayservice)["workerGroupSpecs"]
    cpus, gpus = worker_capacity(serve_group)
    pods = serve_group["maxReplicas"]
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    deployments = {d["name"]: d for d in serve_config["applications"][0]["deployments"]}
    ingress, generator = deployments["Ingress"], deployments["Generator"]
    generator_max = generator["autoscaling_config"]["max_replicas"]
    ingress_max = ingress["autoscaling_config"]["max_replicas"]
    assert settings.replica_num_cpus <= cpus and settings.replica_num_gpus <= gpus, name
    needed_cpus = (
        ingress_max * ingress["ray_actor_options"]["num_cpus"]
        + generator_max * settings.replica_num_cpus
    )
    assert needed_cpus <= pods * cpus, f"{name}: {needed_cpus} CPUs > {pods} x {cpus}"
    assert generator_max * settings.replica_num_gpus <= pods * gpus, name
    assert serve_group["minReplicas"] <= serve_group["replicas"] <= serve_group["maxReplicas"]
    # Learners: every learner actor fits, one per pod at least.
    learners = find(objects, "RayJob", "tailor-learners")
    (learner_group,) = ray_cluster_spec(learners)["workerGroupSpecs"]
    cpus, gpus = worker_capacity(learner_group)
    pods = learner_group["maxReplicas"]
    assert settings.learner_num_cpus <= cpus and settings.learner_num_gpus <= gpus, name
    assert settings.learner_workers * settings.learner_num_gpus <= pods * gpus, name
    assert settings.learner_workers * settings.learner_num_cpus <= pods * cpus, name
    if name == "gpu":  # GPUs where the settings ask for them
        assert settings.replica_num_gpus == 1 and gpus == 1
        assert settings.learner_num_gpus == 1


def test_serve_workers_probe_readyz_and_healthz(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = overlay
    rayservice = find(objects, "RayService", "tailor")
    cluster = ray_cluster_spec(rayservice)
    (group,) = cluster["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    serve_port = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["http_options"]["port"]
    assert ports["serve"] == serve_port
    assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "serve"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "serve"}
    # An idle worker is removed by the autoscaler before its liveness probe (which
    # fails without a local Serve proxy) could restart it.
    liveness = container["livenessProbe"]
    window = liveness["initialDelaySeconds"] + liveness["periodSeconds"] * liveness[
        "failureThreshold"
    ]
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] < window
    # The head keeps KubeRay's own probes: the app is deployed only once it is ready.
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "readinessProbe" not in head and "livenessProbe" not in head


def test_prometheus_scrape_config_matches_pod_ports(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = overlay
    scrape = yaml.safe_load(
        decoded(find(objects, "ConfigMap", "tailor-prometheus-scrape"))["scrape-configs.yaml"]
    )
    kept_ports = {
        rule["regex"]
        for job in scrape
        for rule in job["relabel_configs"]
        if rule.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]
    }
    assert kept_ports == {"serve", "metrics"}
    declared = {
        port["name"]
        for _, spec in all_pod_specs(objects)
        for container in spec["containers"]
        for port in container.get("ports", [])
    }
    assert kept_ports <= declared


def test_adapter_store_is_shared_by_every_ray_container(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    stores = set()
    for obj in objects:
        if obj["kind"] not in ("RayService", "RayJob"):
            continue
        for where, template in pod_templates(obj):
            container = template["spec"]["containers"][0]
            store = container_env(objects, container)["TAILOR_ADAPTER_STORE"]
            stores.add(store)
            if not store.startswith("s3://"):  # a path: it must be on the shared volume
                volumes = {v["name"]: v for v in template["spec"]["volumes"]}
                mount = next(
                    m for m in container["volumeMounts"] if store.startswith(m["mountPath"])
                )
                claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
                assert claim == "tailor-adapters", f"{object_id(obj)} {where}"
    assert len(stores) == 1, f"overlay {name}: serving and learners disagree: {stores}"
    (store,) = stores
    assert store.startswith("s3://") == (name == "gpu")


def test_overlay_sets_the_image_of_every_ray_container(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    images = {
        container["image"]
        for obj in objects
        if obj["kind"] in ("RayService", "RayJob")
        for _, template in pod_templates(obj)
        for container in template["spec"]["containers"]
    }
    assert len(images) == 1 and re.fullmatch(r"\S+:\S+", images.pop()), name


def test_dockerfile_installs_pinned_torch_before_the_project() -> None:
    # As the Makefile does: a plain torch requirement would resolve to other wheels.
    lines = (REPO / "deploy" / "Dockerfile").read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    project_line = next(
        i for i, line in enumerate(lines) if re.search(r"pip install .*/src/tailor", line)
    )
    assert torch_line < project_line


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_tool_manifests_validate(kubernetes_version: str) -> None:
    objects = [
        doc
        for path in sorted((K8S_DIR / "tools").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert objects
    errors = [error for obj in objects for error in validate_manifest(obj, kubernetes_version)]
    assert errors == []


def test_model_copy_pod_mounts_the_gpu_overlays_model_volume(
    gpu_objects: list[dict[str, Any]],
) -> None:
    pod = yaml.safe_load((K8S_DIR / "tools" / "model-copy-pod.yaml").read_text())
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    find(gpu_objects, "PersistentVolumeClaim", claim)
    settings = settings_from_env(decoded(find(gpu_objects, "ConfigMap", "tailor-settings")))
    mount = pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert settings.base_model.startswith(mount + "/")
