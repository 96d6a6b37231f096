"""Each overlay renders with ``kubectl kustomize``; its core objects are valid for the
newest Kubernetes schema, strictly; its custom resources are valid for the operators'
published schemas where a registry package ships them; nothing escapes both."""

from __future__ import annotations

import copy
from typing import Final

import pytest

from deploy.tests.manifests import (
    CORE_GROUPS,
    K8S,
    OVERLAYS,
    TOPOLOGY_KINDS,
    Manifest,
    load_yaml,
    named,
    render,
)
from deploy.tests.schemas import NO_SCHEMA, kubernetes_errors, operator_schema_errors

POLICY_CHECKED: Final = {
    ("rabbitmq.com/v1beta1", kind) for kind in ("RabbitmqCluster", *TOPOLOGY_KINDS)
} | {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
}
"""Custom resources no registry package describes: test_engines_and_topology checks the fields
the RabbitMQ Cluster Operator 2.16, Messaging Topology Operator 1.17, CloudNativePG 1.27
and its Barman Cloud plugin 0.7 require."""


def _custom(manifests: tuple[Manifest, ...]) -> list[Manifest]:
    return [item for item in manifests if item["apiVersion"] not in CORE_GROUPS]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_renders_into_one_namespace(overlay: str) -> None:
    """kubectl kustomize renders the overlay; every namespaced object lands in blume-share."""
    manifests = render(overlay)
    assert len(manifests) > 50
    for item in manifests:
        if item["kind"] != "Namespace":
            assert item["metadata"].get("namespace") == "blume-share", item["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_are_valid_for_the_current_kubernetes_schema(overlay: str) -> None:
    """Every Deployment, Service, Job, NetworkPolicy… validates strictly (unknown fields fail)."""
    core = [item for item in render(overlay) if item["apiVersion"] in CORE_GROUPS]
    assert {item["kind"] for item in core} >= {"Deployment", "Job", "CronJob", "NetworkPolicy"}
    errors = {
        f"{item['kind']}/{item['metadata']['name']}": kubernetes_errors(item) for item in core
    }
    assert {where: error for where, error in errors.items() if error} == {}


def test_the_kubernetes_schema_check_refuses_a_misplaced_field() -> None:
    """A field the schema does not know (readOnlyRootFilesystem on the pod) is an error."""
    gateway = copy.deepcopy(named(render("production"), "Deployment", "access-gateway"))
    gateway["spec"]["template"]["spec"]["securityContext"]["readOnlyRootFilesystem"] = True
    assert kubernetes_errors(gateway) is not None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_are_valid_for_the_operators_schemas(overlay: str) -> None:
    """KEDA, prometheus-operator and External Secrets objects pass their published schemas;
    the rest are the engines' resources that the policy tests check."""
    custom = _custom(render(overlay))
    errors = operator_schema_errors(custom)
    unchecked = {
        (item["apiVersion"], item["kind"])
        for item, error in zip(custom, errors, strict=True)
        if error == NO_SCHEMA
    }
    assert unchecked <= POLICY_CHECKED
    failures = {
        f"{item['kind']}/{item['metadata']['name']}": error
        for item, error in zip(custom, errors, strict=True)
        if error not in (None, NO_SCHEMA)
    }
    assert failures == {}
    kinds = {item["kind"] for item, error in zip(custom, errors, strict=True) if error is None}
    assert kinds >= {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def test_the_operator_schema_check_refuses_a_broken_scaled_object() -> None:
    """A ScaledObject without its target and with a non-integer minimum is refused."""
    scaled = copy.deepcopy(named(render("production"), "ScaledObject", "notifier"))
    del scaled["spec"]["scaleTargetRef"]
    scaled["spec"]["minReplicaCount"] = "two"
    [error] = operator_schema_errors([scaled])
    assert error is not None
    assert "scaleTargetRef" in error
    assert "minReplicaCount" in error


def test_the_examples_are_valid_and_hardened() -> None:
    """Manifests shipped as examples (the ops toolbox pod) pass the strict schema and run
    as the rendered workloads do: non-root, read-only root, no capabilities."""
    examples = sorted((K8S / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for item in load_yaml(path):
            assert kubernetes_errors(item) is None, path.name
            for container in item["spec"]["containers"]:
                security = container["securityContext"]
                assert security["readOnlyRootFilesystem"] is True, path.name
                assert security["capabilities"]["drop"] == ["ALL"], path.name
                assert item["spec"]["securityContext"]["runAsNonRoot"] is True, path.name
