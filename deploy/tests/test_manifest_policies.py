"""Policies over the rendered workloads: probes, resources and the hardened
securityContext on every container; a Deployment and a ScaledObject for every worker of
``blume_share.services``; no Secret value in the manifests; pinned images; availability."""

from __future__ import annotations

import inspect
import re
from typing import Any, Final

import pytest
from blume_access_gateway import server
from blume_runtime.rabbit import RabbitTransport
from blume_share.services import GATEWAY, SERVICES

from deploy.tests.manifests import (
    OVERLAYS,
    Container,
    config_map_data,
    containers,
    named,
    of_kind,
    pod_spec,
    render,
    runs,
)

SECRET_NAMED: Final = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|_KEYS|_URL)$")
"""Environment variables that may carry a credential: only from a Secret, never a literal
(``*_FILE`` variables name a mounted file instead, and are fine)."""
NOT_A_CREDENTIAL: Final = {"BLUME_PUBLIC_BASE_URL", "BLUME_PORTAL_BASE_URL"}
URL_WITH_CREDENTIALS: Final = re.compile(r"://[^/@\s]+:[^/@\s]*@")
IMAGE: Final = re.compile(
    r"^(?P<repository>[^:@\s]+/[^:@\s]+)(:(?P<tag>\w[\w.+-]*))?(?P<digest>@sha256:[0-9a-f]{64})?$"
)


def deployment_for(overlay: str, service: str) -> dict[str, Any]:
    found = [
        item
        for item in of_kind(render(overlay), "Deployment")
        if runs(item)[1:] == ["run", service]
    ]
    assert len(found) == 1, f"{len(found)} Deployments run {service}"
    return found[0]


def _setting(container: Container, key: str) -> Any:
    return container.spec.get("securityContext", {}).get(
        key, container.pod.get("securityContext", {}).get(key)
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened(overlay: str) -> None:
    """Non-root (numeric UID), read-only root file system, no privilege escalation, all
    capabilities dropped, seccomp RuntimeDefault: on every container of every workload."""
    checked = 0
    for container in containers(render(overlay)):
        security = container.spec.get("securityContext", {})
        assert _setting(container, "runAsNonRoot") is True, container.where
        assert isinstance(_setting(container, "runAsUser"), int), container.where
        assert _setting(container, "runAsUser") > 0, container.where
        assert security.get("readOnlyRootFilesystem") is True, container.where
        assert security.get("allowPrivilegeEscalation") is False, container.where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], container.where
        assert "add" not in security.get("capabilities", {}), container.where
        assert _setting(container, "seccompProfile") == {"type": "RuntimeDefault"}, container.where
        assert container.pod.get("automountServiceAccountToken") is False, container.where
        checked += 1
    assert checked >= len(SERVICES) + 4


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_paths_are_empty_dirs_or_declared_volumes(overlay: str) -> None:
    """With the root read-only, every writable mount is an emptyDir, or the checkpoint volume."""
    for container in containers(render(overlay)):
        volumes = {volume["name"]: volume for volume in container.pod.get("volumes", [])}
        for mount in container.spec.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if mount.get("readOnly"):
                continue
            assert (
                "emptyDir" in volume
                or volume.get("persistentVolumeClaim", {}).get("claimName")
                == "blume-audit-checkpoints"
            ), f"{container.where}: {mount['mountPath']}"
        assert any(m["mountPath"] == "/tmp" for m in container.spec.get("volumeMounts", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    """CPU and memory requests and limits everywhere, requests no higher than limits."""
    units = {"m": 0.001, "Mi": 2**20, "Gi": 2**30, "": 1}

    def quantity(text: str | int) -> float:
        number, unit = re.fullmatch(r"([0-9.]+)(m|Mi|Gi|)", str(text)).groups()  # type: ignore[union-attr]
        return float(number) * units[unit]

    for container in containers(render(overlay)):
        resources = container.spec.get("resources", {})
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request is not None, f"{container.where}: no {resource} request"
            assert limit is not None, f"{container.where}: no {resource} limit"
            assert quantity(request) <= quantity(limit), container.where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_probes(overlay: str) -> None:
    """Every Deployment's container has liveness and readiness probes (Jobs run to an end
    and need none); `blume-share run` processes probe /healthz and /readyz on the ops port,
    which is the port BLUME_OPS_PORT names."""
    manifests = render(overlay)
    ops_port = int(config_map_data(manifests, "blume-share-settings")["BLUME_OPS_PORT"])
    for container in containers(manifests):
        if container.workload["kind"] != "Deployment":
            continue
        assert "livenessProbe" in container.spec, container.where
        assert "readinessProbe" in container.spec, container.where
        if runs(container.workload)[1] != "run":
            continue
        ports = {port["name"]: port["containerPort"] for port in container.spec["ports"]}
        liveness = container.spec["livenessProbe"]["httpGet"]
        readiness = container.spec["readinessProbe"]["httpGet"]
        assert (liveness["path"], ports[liveness["port"]]) == ("/healthz", ops_port)
        assert (readiness["path"], ports[readiness["port"]]) == ("/readyz", ops_port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_worker_has_a_deployment_and_a_scaled_object(overlay: str) -> None:
    """Each worker of blume_share.services runs as `blume-share run <name>` in its own
    Deployment, scaled by KEDA on its own queue, never below one replica."""
    manifests = render(overlay)
    scaled = {
        item["spec"]["scaleTargetRef"]["name"]: item for item in of_kind(manifests, "ScaledObject")
    }
    for service in SERVICES:
        deployment = deployment_for(overlay, service)
        assert runs(deployment) == ["blume-share", "run", service]
        scaler = scaled[deployment["metadata"]["name"]]
        assert scaler["spec"]["minReplicaCount"] >= 1
        assert scaler["spec"]["maxReplicaCount"] >= scaler["spec"]["minReplicaCount"]
        [trigger] = scaler["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == f"blume.share.{service}"
    assert len(scaled) == len(SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_and_the_audit_api_have_their_own_deployments_and_services(
    overlay: str,
) -> None:
    """The gateway: Deployment, HPA, Service and a TLS Ingress; the audit API: Deployment
    and Service; the migrations Job and the audit verify CronJob run the CLI."""
    manifests = render(overlay)
    gateway = deployment_for(overlay, GATEWAY)
    name = gateway["metadata"]["name"]
    assert (
        named(manifests, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]["name"] == name
    )
    service = named(manifests, "Service", name)
    assert (
        service["spec"]["selector"].items()
        <= gateway["spec"]["template"]["metadata"]["labels"].items()
    )
    ingress = named(manifests, "Ingress", name)
    [tls] = ingress["spec"]["tls"]
    assert tls["secretName"]
    assert tls["hosts"] == [rule["host"] for rule in ingress["spec"]["rules"]]
    audit_api = named(manifests, "Deployment", "audit-api")
    assert runs(audit_api)[1:3] == ["audit", "serve-api"]
    assert named(manifests, "Service", "audit-api")["spec"]["selector"] == {
        "app.kubernetes.io/name": "audit-api"
    }
    assert runs(named(manifests, "Job", "blume-share-migrate")) == ["blume-share", "migrate"]
    assert runs(named(manifests, "CronJob", "blume-audit-verify")) == [
        "blume-share",
        "audit",
        "verify",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_in_the_manifests(overlay: str) -> None:
    """No Secret object, no credential-like variable given as a literal, no URL with a
    password in any value or ConfigMap: secrets are referenced by name only."""
    manifests = render(overlay)
    assert of_kind(manifests, "Secret") == []
    for container in containers(manifests):
        for variable in container.spec.get("env", []):
            name = variable["name"]
            if "value" in variable:
                assert not URL_WITH_CREDENTIALS.search(variable["value"]), container.where
                if name not in NOT_A_CREDENTIAL:
                    assert not SECRET_NAMED.search(name), f"{container.where}: {name} literal"
    for config in of_kind(manifests, "ConfigMap"):
        for key, value in config.get("data", {}).items():
            assert not URL_WITH_CREDENTIALS.search(value), f"{config['metadata']['name']}: {key}"
            if key not in NOT_A_CREDENTIAL:
                assert not SECRET_NAMED.search(key), f"{config['metadata']['name']}: {key}"


def test_the_secret_check_catches_an_inlined_password() -> None:
    """The patterns above flag an inlined broker URL with a password, and a literal key."""
    assert URL_WITH_CREDENTIALS.search("amqp://notifier:s3cret@rabbit:5672/blume")
    assert not URL_WITH_CREDENTIALS.search("http://otel-collector.observability.svc:4317")
    assert SECRET_NAMED.search("BLUME_GATEWAY_SECRET_KEY")
    assert not SECRET_NAMED.search("BLUME_GATEWAY_SECRET_KEY_FILE")


def _images(overlay: str) -> dict[str, str]:
    manifests = render(overlay)
    found = {container.where: container.spec["image"] for container in containers(manifests)}
    for cluster in of_kind(manifests, "RabbitmqCluster"):
        found[f"RabbitmqCluster/{cluster['metadata']['name']}"] = cluster["spec"]["image"]
    for cluster in of_kind(manifests, "Cluster"):
        found[f"Cluster/{cluster['metadata']['name']}"] = cluster["spec"]["imageName"]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay: str) -> None:
    """Every image, ours and the engines', names a version tag or a digest, never latest."""
    images = _images(overlay)
    assert len(set(images.values())) >= 3
    for where, image in images.items():
        match = IMAGE.fullmatch(image)
        assert match is not None, f"{where}: {image}"
        assert match["digest"] or match["tag"] not in (None, "latest"), f"{where}: {image}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_drain(overlay: str) -> None:
    """Pods get longer to stop than the runtime's drain (in-flight messages, then the
    gateway's HTTP requests) takes, so SIGKILL never cuts a drain short."""
    transport_drain = inspect.signature(RabbitTransport).parameters["graceful_timeout"].default
    drain = transport_drain + server._GRACEFUL_SHUTDOWN_SECONDS
    for deployment in of_kind(render(overlay), "Deployment"):
        spec = pod_spec(deployment)
        assert spec is not None
        assert spec["terminationGracePeriodSeconds"] > drain, deployment["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_spreads_across_zones(overlay: str) -> None:
    """Each Deployment's pods spread over zones (topology.kubernetes.io/zone)."""
    for deployment in of_kind(render(overlay), "Deployment"):
        spec = pod_spec(deployment)
        assert spec is not None
        keys = {constraint["topologyKey"] for constraint in spec["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys, deployment["metadata"]["name"]


def test_disruption_budgets_cover_every_deployment_in_production_only() -> None:
    """Production has a PodDisruptionBudget selecting each Deployment's pods; dev has none."""
    assert of_kind(render("dev"), "PodDisruptionBudget") == []
    production = render("production")
    budgets = of_kind(production, "PodDisruptionBudget")
    for deployment in of_kind(production, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            budget
            for budget in budgets
            if budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"]["maxUnavailable"] == 1


def test_dev_runs_one_replica_of_everything() -> None:
    """The dev overlay: one replica per worker, gateway and audit API, one engine node each."""
    dev = render("dev")
    for scaler in of_kind(dev, "ScaledObject"):
        assert scaler["spec"]["maxReplicaCount"] == 1
    hpa = named(dev, "HorizontalPodAutoscaler", "access-gateway")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)
    assert named(dev, "Deployment", "audit-api")["spec"]["replicas"] == 1
    assert named(dev, "RabbitmqCluster", "blume-rabbitmq")["spec"]["replicas"] == 1
    assert named(dev, "Cluster", "blume-db")["spec"]["instances"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_reads_the_settings_and_the_tenant_policy(overlay: str) -> None:
    """The shared settings ConfigMap is in every Deployment's environment and the tenant
    policy is mounted where BLUME_TENANT_POLICY_FILE points; the gateway also gets the
    variables the tenant policy names (blume-tenant-credentials)."""
    manifests = render(overlay)
    settings = config_map_data(manifests, "blume-share-settings")
    policy_dir = settings["BLUME_TENANT_POLICY_FILE"].rsplit("/", 1)[0]
    for container in containers(manifests):
        if container.workload["kind"] != "Deployment":
            continue
        sources = container.spec["envFrom"]
        maps = [source["configMapRef"]["name"] for source in sources if "configMapRef" in source]
        assert [name.rsplit("-", 1)[0] for name in maps] == ["blume-share-settings"]
        mounts = {mount["mountPath"] for mount in container.spec["volumeMounts"]}
        assert policy_dir in mounts, container.where
    gateway = deployment_for(overlay, GATEWAY)["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "blume-tenant-credentials"}} in gateway["envFrom"]
