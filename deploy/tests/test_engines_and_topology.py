"""The engines' resources, which no registry package describes: the fields the RabbitMQ
Cluster Operator 2.16, the Messaging Topology Operator 1.17 and CloudNativePG 1.27 (with
its Barman Cloud plugin 0.7) need; the broker users generated from the contract registry;
and every Secret the production overlay names, delivered by External Secrets."""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from blume_contracts.registry import EVENTS
from blume_runtime.broker_definitions import definitions
from blume_runtime.topology import UNROUTED_POLICY_NAME
from blume_share.services import GATEWAY, SERVICES

from deploy.tests.manifests import (
    OVERLAYS,
    TOPOLOGY_KINDS,
    config_map_data,
    containers,
    named,
    of_kind,
    render,
)
from deploy.tools import broker_topology

OPERATOR_GENERATED: Final = {"blume-db-app"}
"""Secrets an operator writes itself: CloudNativePG's credentials of the database owner."""


def test_the_broker_topology_file_is_current() -> None:
    """engines/rabbitmq-topology.yaml is what the generator makes from today's registry."""
    assert broker_topology.TARGET.read_text(encoding="utf-8") == broker_topology.render()


def test_the_operator_creates_the_topology_the_broker_definitions_hold() -> None:
    """The Queue, Exchange and Binding resources are the queues, private and unrouted
    exchanges and bindings of ``blume-share broker definitions``, with the same arguments
    (the operator sets x-queue-type from ``type``), so every consumer's queue exists before
    any worker; the alternate-exchange policy is the definitions' too."""
    manifests = render("production")
    document = definitions(broker_topology.VHOST)
    queues = {
        item["spec"]["name"]: {"x-queue-type": item["spec"]["type"], **item["spec"]["arguments"]}
        for item in of_kind(manifests, "Queue")
    }
    assert queues == {queue["name"]: queue["arguments"] for queue in document["queues"]}
    exchanges = {
        (item["spec"]["name"], item["spec"]["type"]) for item in of_kind(manifests, "Exchange")
    }
    ours = {
        (item["name"], item["type"]) for item in document["exchanges"] if item["type"] != "topic"
    }
    assert exchanges == ours
    bindings = {
        (item["spec"]["source"], item["spec"]["destination"], item["spec"]["routingKey"])
        for item in of_kind(manifests, "Binding")
    }
    expected = {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]}
    assert bindings == expected
    assert {item["spec"]["destinationType"] for item in of_kind(manifests, "Binding")} == {"queue"}
    unrouted = named(manifests, "Policy", UNROUTED_POLICY_NAME)["spec"]
    [shipped] = [p for p in document["policies"] if p["name"] == unrouted["name"]]
    assert (unrouted["pattern"], unrouted["applyTo"], unrouted["definition"]) == (
        shipped["pattern"],
        shipped["apply-to"],
        shipped["definition"],
    )


def _secret_refs(item: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    if isinstance(item, dict):
        for key, value in item.items():
            if key in {"secretKeyRef", "secretRef"} and isinstance(value, dict):
                found.add(value["name"])
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                found.add(value["secretName"])
            elif key in {"importCredentialsSecret", "accessKeyId", "secretAccessKey"}:
                found.add(value["name"])
            elif key == "secretTargetRef":
                found.update(ref["name"] for ref in value)
            elif key == "tls" and isinstance(value, list):
                found.update(entry["secretName"] for entry in value)
            else:
                found |= _secret_refs(value)
    elif isinstance(item, list):
        for value in item:
            found |= _secret_refs(value)
    return found


def _external_secret_targets(manifests: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {item["spec"]["target"]["name"]: item for item in of_kind(manifests, "ExternalSecret")}


def test_every_secret_production_names_is_delivered() -> None:
    """Each Secret the production overlay refers to comes from an ExternalSecret (or from
    CloudNativePG); no ExternalSecret delivers a Secret nothing uses."""
    production = render("production")
    referenced = set().union(
        *(_secret_refs(item) for item in production if item["kind"] != "ExternalSecret")
    )
    delivered = set(_external_secret_targets(production))
    assert referenced - OPERATOR_GENERATED == delivered


def _broker_users(manifests: tuple[dict[str, Any], ...]) -> dict[str, str]:
    value = config_map_data(manifests, "blume-share-settings")["BLUME_BROKER_USERS"]
    return dict(entry.split("=", 1) for entry in value.split(","))


def test_each_process_has_its_own_broker_user() -> None:
    """BLUME_BROKER_USERS names a user for every worker, the gateway and ops; each runs with
    the Secret of that user, whose username is the one the topology resources create."""
    production = render("production")
    users = _broker_users(production)
    assert set(users) == {*SERVICES, GATEWAY, broker_topology.OPS}
    assert len(set(users.values())) == len(users)
    templates = _external_secret_targets(production)
    topology_users = {item["metadata"]["name"] for item in of_kind(production, "User")}
    for service, username in users.items():
        secret = broker_topology.secret_name(service)
        assert broker_topology.resource_name(service) in topology_users
        template = templates[secret]["spec"]["target"]["template"]["data"]
        assert template["username"] == username
        assert urlsplit(template["url"].replace("{{ .password | urlquery }}", "x")).path == (
            f"/{broker_topology.VHOST}"
        )
    for container in containers(production):
        args = container.spec.get("args", [])
        if args[:1] != ["run"]:
            continue
        [service] = args[1:]
        amqp = {v["name"]: v for v in container.spec["env"]}["BLUME_AMQP_URL"]
        assert amqp["valueFrom"]["secretKeyRef"]["name"] == broker_topology.secret_name(service)


def test_topic_permissions_follow_the_contract_registry() -> None:
    """A user may publish exactly the event types the registry says it produces, bind
    exactly those it consumes; a worker configures only its own queues."""
    for user in broker_topology.broker_users():
        if user == broker_topology.KEDA:
            continue
        topics = broker_topology.topic_permissions(user)
        producer = broker_topology.CLI_PRODUCER if user == broker_topology.OPS else user
        for event_type, spec in EVENTS.items():
            assert bool(re.fullmatch(topics["write"], event_type)) == (
                producer in spec.producers
            ), (user, event_type)
            if user in spec.consumers:
                assert re.fullmatch(topics["read"], event_type), (user, event_type)
    for service in SERVICES:
        configure = broker_topology.permissions(service)["configure"]
        for other in SERVICES:
            for queue in (
                f"blume.share.{other}",
                f"blume.share.{other}.retry",
                f"blume.share.{other}.dlq",
            ):
                assert bool(re.fullmatch(configure, queue)) == (other == service), (service, queue)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rabbitmq_resources_fit_together(overlay: str) -> None:
    """Every topology resource names the one RabbitmqCluster; permissions name existing
    users and the vhost the workers and KEDA use; users are backed by Secrets."""
    manifests = render(overlay)
    [cluster] = of_kind(manifests, "RabbitmqCluster")
    name = cluster["metadata"]["name"]
    assert cluster["spec"]["persistence"]["storage"]
    resources = cluster["spec"]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    users = {item["metadata"]["name"] for item in of_kind(manifests, "User")}
    [vhost] = of_kind(manifests, "Vhost")
    for kind in TOPOLOGY_KINDS:
        for item in of_kind(manifests, kind):
            assert item["spec"]["rabbitmqClusterReference"] == {"name": name}
            if kind in {"Permission", "TopicPermission", "Policy", "Exchange", "Queue", "Binding"}:
                assert item["spec"]["vhost"] == vhost["spec"]["name"]
            if kind in {"Permission", "TopicPermission"}:
                assert item["spec"]["userReference"]["name"] in users
    for user in of_kind(manifests, "User"):
        assert user["spec"]["importCredentialsSecret"]["name"].startswith("blume-amqp-")
    for scaler in of_kind(manifests, "ScaledObject"):
        assert scaler["spec"]["triggers"][0]["metadata"]["vhostName"] == vhost["spec"]["name"]
    policy = named(manifests, "Policy", "blume-quorum-queues")
    assert policy["spec"]["definition"]["dead-letter-strategy"] == "at-least-once"
    assert policy["spec"]["definition"]["overflow"] == "reject-publish"


def test_production_engines_are_replicated() -> None:
    """Production: three RabbitMQ nodes, three PostgreSQL instances with a synchronous
    replica, both spread over zones."""
    production = render("production")
    rabbit = named(production, "RabbitmqCluster", "blume-rabbitmq")
    assert rabbit["spec"]["replicas"] == 3
    spread = rabbit["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
    assert spread["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    database = named(production, "Cluster", "blume-db")
    assert database["spec"]["instances"] == 3
    assert database["spec"]["postgresql"]["synchronous"]["number"] >= 1
    assert database["spec"]["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrations_run_as_the_database_owner_and_roles_stay_theirs(overlay: str) -> None:
    """The migrations Job connects with the initdb owner's credentials that CloudNativePG
    generates (<cluster>-app, key uri); bootstrap lets that owner create roles; no role is a
    CloudNativePG managed role, so none of those the migrations create is managed twice."""
    manifests = render(overlay)
    database = named(manifests, "Cluster", "blume-db")
    initdb = database["spec"]["bootstrap"]["initdb"]
    owner = initdb["owner"]
    assert initdb["database"] == "blume"
    assert f"ALTER ROLE {owner} CREATEROLE" in initdb["postInitApplicationSQL"]
    assert "managed" not in database["spec"]
    assert database["spec"]["enableSuperuserAccess"] is False
    job = named(manifests, "Job", "blume-share-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    url = {v["name"]: v for v in container["env"]}["BLUME_DATABASE_URL"]["valueFrom"]
    assert url["secretKeyRef"] == {"name": f"{database['metadata']['name']}-app", "key": "uri"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backups_reach_the_object_store(overlay: str) -> None:
    """WAL archiving and the nightly base backup go through the Barman Cloud plugin to the
    ObjectStore the Cluster names."""
    manifests = render(overlay)
    database = named(manifests, "Cluster", "blume-db")
    [plugin] = database["spec"]["plugins"]
    assert plugin["isWALArchiver"] is True
    store = named(manifests, "ObjectStore", plugin["parameters"]["barmanObjectName"])
    assert store["spec"]["configuration"]["destinationPath"].startswith("s3://")
    [backup] = of_kind(manifests, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == database["metadata"]["name"]
    assert backup["spec"]["pluginConfiguration"]["name"] == plugin["name"]
