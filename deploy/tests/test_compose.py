"""deploy/compose.yaml runs what Kubernetes runs: for every Deployment and Job, a compose
service with the same command, the same variables (literal settings with the same values;
hosts and credentials are the laptop's own), the same secret file paths and the same
tenant policy, under the same hardening. No Docker engine is needed to check it."""

from __future__ import annotations

from typing import Any, Final

import pytest
import yaml

from deploy.tests.manifests import REPO, config_map_data, pod_spec, render, runs

COMPOSE: Final = REPO / "deploy" / "compose.yaml"
ENGINES: Final = {"rabbitmq", "postgres", "mailpit", "orthanc"}
ONLY_IN_KUBERNETES: Final = {"OTEL_EXPORTER_OTLP_ENDPOINT"}
"""No OTLP collector runs on a laptop: unset, tracing exports nothing."""
LAPTOP_VALUES: Final = {"BLUME_BROKER_USERS"}
"""One broker user serves every process in compose (the quick start's way)."""


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def kubernetes_workloads() -> list[dict[str, Any]]:
    manifests = render("production")
    return [item for item in manifests if item["kind"] in {"Deployment", "Job"}]


def kubernetes_environment(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variable of the main container, as an env entry (value or valueFrom)."""
    pod = pod_spec(workload)
    assert pod is not None
    container = pod["containers"][0]
    found: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"].rsplit("-", 1)[0]
            data = config_map_data(render("production"), name)
            found.update({key: {"value": value} for key, value in data.items()})
    found.update({entry["name"]: entry for entry in container.get("env", [])})
    return found


def service_running(command: list[str]) -> tuple[str, dict[str, Any]]:
    matches = [
        (name, service)
        for name, service in compose()["services"].items()
        if ["blume-share", *service.get("command", [])] == command
    ]
    assert len(matches) == 1, f"{len(matches)} compose services run {command}"
    return matches[0]


def test_compose_has_the_engines_and_one_service_per_workload() -> None:
    """RabbitMQ, PostgreSQL, Mailpit and Orthanc, and a service for each Deployment and Job."""
    services = compose()["services"]
    assert set(services) >= ENGINES
    for workload in kubernetes_workloads():
        name, service = service_running(runs(workload))
        assert service["build"]["dockerfile"] == "deploy/image/Containerfile", name
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == REPO


@pytest.mark.parametrize(
    "workload", kubernetes_workloads(), ids=lambda item: item["metadata"]["name"]
)
def test_each_service_has_the_kubernetes_environment(workload: dict[str, Any]) -> None:
    """Same variable names; literal settings equal unless they name a host (a URL);
    *_FILE paths equal and backed by a compose secret or volume at that path."""
    name, service = service_running(runs(workload))
    expected = kubernetes_environment(workload)
    actual: dict[str, str] = service["environment"]
    optional = {
        key
        for key, entry in expected.items()
        if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")
    }
    assert set(actual) == set(expected) - ONLY_IN_KUBERNETES - optional, name
    mounted = {secret["target"] for secret in service.get("secrets", [])}
    mounted |= {volume.split(":")[1] for volume in service.get("volumes", [])}
    for key, entry in expected.items():
        if key not in actual or "value" not in entry:
            continue
        value = entry["value"]
        if key.endswith("_FILE"):
            assert actual[key] == value, (name, key)
            assert value in mounted, (name, key)
        elif "://" not in value and key not in LAPTOP_VALUES:
            assert str(actual[key]) == value, (name, key)


@pytest.mark.parametrize(
    "workload", kubernetes_workloads(), ids=lambda item: item["metadata"]["name"]
)
def test_each_service_is_hardened_and_reads_the_same_tenant_policy(
    workload: dict[str, Any],
) -> None:
    """The same numeric user, a read-only root with /tmp writable, no capabilities; the
    tenant policy file of the Kubernetes base mounted where the variable points."""
    name, service = service_running(runs(workload))
    pod = pod_spec(workload)
    assert pod is not None
    assert (
        service["user"]
        == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    )
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    policy_file = service["environment"].get("BLUME_TENANT_POLICY_FILE")
    if policy_file is None:
        return
    sources = {
        volume.split(":")[1]: (COMPOSE.parent / volume.split(":")[0]).resolve()
        for volume in service["volumes"]
    }
    assert sources[policy_file] == REPO / "deploy/k8s/base/config/tenants.yaml", name


def test_the_compose_secrets_come_from_the_environment() -> None:
    """No secret value is in the file: each compose secret reads an environment variable,
    and every password or URL with credentials is interpolated from one."""
    document = compose()
    assert document["secrets"]
    for name, secret in document["secrets"].items():
        assert set(secret) == {"environment"}, name
    for name, service in document["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASS" in key or "@" in str(value):
                assert "${BLUME_COMPOSE_" in str(value), (name, key)
