"""NetworkPolicies: default deny, then only the flows each workload needs. An evaluator
applies the rendered policies to labelled pods the way Kubernetes does (a flow is allowed
when a policy selecting the pod allows it; a pod no policy selects is open)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import pytest

from deploy.tests.manifests import K8S, OVERLAYS, load_yaml, of_kind, render

NAMESPACE: Final = "blume-share"


@dataclass(frozen=True)
class Pod:
    labels: dict[str, str]
    namespace: str = NAMESPACE
    namespace_tags: dict[str, str] = field(default_factory=dict)
    """Labels of the pod's namespace besides its name."""

    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_tags}


@dataclass(frozen=True)
class Outside:
    """An address outside the cluster (a mail relay, an OpenID provider, a PACS)."""

    labels: dict[str, str] = field(default_factory=dict)
    namespace: str = ""


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: Pod | Outside) -> bool:
    if "ipBlock" in peer:
        return isinstance(other, Outside)  # every ipBlock here is 0.0.0.0/0
    if isinstance(other, Outside):
        return False
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], other.namespace_labels()):
            return False
    elif other.namespace != NAMESPACE:
        return False
    return _matches(peer.get("podSelector", {}), other.labels)


def _port_matches(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return ports is None or any(entry.get("port") == port for entry in ports)


def allowed(
    policies: list[dict[str, Any]], source: Pod | Outside, target: Pod | Outside, port: int
) -> bool:
    """Whether source may open a TCP connection to target's port: egress and ingress."""
    return _direction(policies, source, target, port, "Egress") and _direction(
        policies, target, source, port, "Ingress"
    )


def _direction(
    policies: list[dict[str, Any]], pod: Pod | Outside, peer: Pod | Outside, port: int, kind: str
) -> bool:
    if not isinstance(pod, Pod) or pod.namespace != NAMESPACE:
        return True  # not ours to restrict here
    selecting = [
        policy
        for policy in policies
        if kind in policy["spec"]["policyTypes"]
        and _matches(policy["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    return any(
        _port_matches(rule, port)
        and any(_peer_matches(item, peer) for item in rule.get(peers_key, [{}]) or [{}])
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def _pod(manifests: tuple[dict[str, Any], ...], name: str) -> Pod:
    for item in manifests:
        if item["kind"] in {"Deployment", "Job"} and item["metadata"]["name"] == name:
            return Pod(item["spec"]["template"]["metadata"]["labels"])
        if item["kind"] == "CronJob" and item["metadata"]["name"] == name:
            return Pod(item["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    raise LookupError(name)


RABBITMQ: Final = Pod({"app.kubernetes.io/name": "blume-rabbitmq"})
POSTGRES: Final = Pod({"cnpg.io/cluster": "blume-db"})
REDIS: Final = Pod({"app.kubernetes.io/name": "redis"})
DNS: Final = Pod({"k8s-app": "kube-dns"}, namespace="kube-system")
COLLECTOR: Final = Pod(
    {"app.kubernetes.io/name": "opentelemetry-collector"}, namespace="observability"
)
PROMETHEUS: Final = Pod({"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
INGRESS_CONTROLLER: Final = Pod(
    {"app.kubernetes.io/name": "ingress-nginx"}, namespace="ingress-nginx"
)
ELSEWHERE: Final = Pod({"app": "anything"}, namespace="some-team")
STRANGER: Final = Pod({"app": "stranger"})
"""A pod in our namespace that is none of ours: default deny must hold against it."""
WORKERS: Final = ("share-dispatcher", "link-issuer", "blume-publisher", "notifier", "audit-sink")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_default_deny_selects_every_pod(overlay: str) -> None:
    """A policy with an empty selector denies all ingress and egress not allowed otherwise."""
    policies = of_kind(render(overlay), "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
    ]
    assert deny
    assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not allowed(policies, STRANGER, RABBITMQ, 5672)
    assert not allowed(policies, STRANGER, Outside(), 443)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_reach_only_what_they_need(overlay: str) -> None:
    """Workers: DNS, RabbitMQ, PostgreSQL, the OTLP collector; SMTP only for the notifier;
    Prometheus in on the ops port; nothing else in or out."""
    manifests = render(overlay)
    policies = of_kind(manifests, "NetworkPolicy")
    for name in WORKERS:
        worker = _pod(manifests, name)
        assert allowed(policies, worker, DNS, 53), name
        assert allowed(policies, worker, RABBITMQ, 5672), name
        assert allowed(policies, worker, POSTGRES, 5432), name
        assert allowed(policies, worker, COLLECTOR, 4318), name  # OTLP/HTTP
        assert allowed(policies, PROMETHEUS, worker, 9464), name
        assert allowed(policies, worker, Outside(), 587) == (name == "notifier"), name
        assert not allowed(policies, worker, Outside(), 443), name
        assert not allowed(policies, worker, REDIS, 6379), name
        assert not allowed(policies, INGRESS_CONTROLLER, worker, 9464), name
        assert not allowed(policies, STRANGER, worker, 9464), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_is_reached_by_the_ingress_and_reaches_its_dependencies(overlay: str) -> None:
    """Gateway: in from the ingress controller, Prometheus and labelled API client
    namespaces; out to DNS, RabbitMQ, PostgreSQL, Redis, and HTTPS (OIDC providers, PACS)."""
    manifests = render(overlay)
    policies = of_kind(manifests, "NetworkPolicy")
    gateway = _pod(manifests, "access-gateway")
    api_client = Pod({"app": "omegaai"}, namespace="omegaai")
    for peer, port in (
        (DNS, 53),
        (RABBITMQ, 5672),
        (POSTGRES, 5432),
        (REDIS, 6379),
        (Outside(), 443),
    ):
        assert allowed(policies, gateway, peer, port), peer
    assert allowed(policies, INGRESS_CONTROLLER, gateway, 8080)
    assert allowed(policies, PROMETHEUS, gateway, 9464)
    assert not allowed(policies, ELSEWHERE, gateway, 8080)
    assert not allowed(policies, gateway, Outside(), 587)
    assert not allowed(policies, api_client, gateway, 8080)  # until its namespace is labelled
    labelled = Pod(api_client.labels, "omegaai", {"blume-share.io/api-client": "true"})
    assert allowed(policies, labelled, gateway, 8080)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_api_is_reached_only_by_compliance_clients(overlay: str) -> None:
    """The audit API: in only from namespaces labelled compliance clients, out only to
    PostgreSQL (and DNS); not from the ingress controller, not from other namespaces."""
    manifests = render(overlay)
    policies = of_kind(manifests, "NetworkPolicy")
    audit_api = _pod(manifests, "audit-api")

    compliance = Pod({"app": "siem"}, "compliance", {"blume-share.io/compliance-client": "true"})
    assert allowed(policies, compliance, audit_api, 8081)
    assert not allowed(policies, INGRESS_CONTROLLER, audit_api, 8081)
    assert not allowed(policies, ELSEWHERE, audit_api, 8081)
    assert not allowed(policies, STRANGER, audit_api, 8081)
    assert allowed(policies, audit_api, POSTGRES, 5432)
    assert not allowed(policies, audit_api, RABBITMQ, 5672)
    assert not allowed(policies, audit_api, Outside(), 443)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jobs_reach_only_the_database(overlay: str) -> None:
    """The migrations Job and the audit verify CronJob reach PostgreSQL and DNS only."""
    manifests = render(overlay)
    policies = of_kind(manifests, "NetworkPolicy")
    for name in ("blume-share-migrate", "blume-audit-verify"):
        job = _pod(manifests, name)
        assert allowed(policies, job, POSTGRES, 5432), name
        assert allowed(policies, job, DNS, 53), name
        assert not allowed(policies, job, RABBITMQ, 5672), name
        assert not allowed(policies, job, Outside(), 443), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_engines_talk_among_themselves_and_to_their_operators(overlay: str) -> None:
    """RabbitMQ clusters with itself, answers the topology operator and KEDA on its HTTP
    API; PostgreSQL replicates, answers the CloudNativePG operator; both feed Prometheus."""
    policies = of_kind(render(overlay), "NetworkPolicy")
    topology_operator = Pod({"app": "messaging-topology-operator"}, namespace="rabbitmq-system")
    keda = Pod({"app": "keda-operator"}, namespace="keda")
    cnpg = Pod({"app": "cnpg"}, namespace="cnpg-system")
    assert allowed(policies, RABBITMQ, RABBITMQ, 25672)
    assert allowed(policies, topology_operator, RABBITMQ, 15672)
    assert allowed(policies, keda, RABBITMQ, 15672)
    assert allowed(policies, PROMETHEUS, RABBITMQ, 15692)
    assert not allowed(policies, STRANGER, RABBITMQ, 5672)
    assert not allowed(policies, ELSEWHERE, RABBITMQ, 15672)
    assert allowed(policies, POSTGRES, POSTGRES, 5432)
    assert allowed(policies, cnpg, POSTGRES, 8000)
    assert allowed(policies, PROMETHEUS, POSTGRES, 9187)
    assert not allowed(policies, STRANGER, POSTGRES, 5432)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ops_toolbox_reaches_the_broker_and_the_database(overlay: str) -> None:
    """The example toolbox pod (dlq commands) reaches RabbitMQ and PostgreSQL, nothing else."""
    policies = of_kind(render(overlay), "NetworkPolicy")
    [toolbox] = load_yaml(K8S / "examples" / "ops-toolbox.yaml")
    pod = Pod(toolbox["metadata"]["labels"])
    assert allowed(policies, pod, RABBITMQ, 5672)
    assert allowed(policies, pod, POSTGRES, 5432)
    assert not allowed(policies, pod, Outside(), 443)
    assert not allowed(policies, STRANGER, pod, 9464)
