"""Monitoring: the scrape configuration reaches the ops port, the PrometheusRule has the
alerts issue 11 asks for, every PromQL expression (alerts and the Grafana dashboard)
parses and names only metrics that exist, and every alert points at its runbook."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import promql_parser
from blume_runtime import metrics
from blume_share.services import SERVICES
from prometheus_client.metrics import MetricWrapperBase

from deploy.tests.manifests import K8S, REPO, config_map_data, named, of_kind, render

SUFFIXES: Final = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}
EXTERNAL_METRICS: Final = {
    # RabbitMQ's Prometheus plugin, /metrics/detailed (queue_coarse_metrics, queue_consumer_count)
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_consumers",
    # kube-state-metrics
    "kube_job_status_failed",
    "kube_cronjob_status_last_schedule_time",
    "kube_cronjob_status_last_successful_time",
}
REQUIRED_ALERTS: Final = {
    "BlumeDeadLetterQueueNotEmpty": {"rabbitmq_detailed_queue_messages"},
    "BlumeWorkerWithoutConsumer": {"blume_consumers_attached"},
    "BlumeOutboxBacklogOld": {"blume_outbox_oldest_age_seconds"},
    "BlumeAuditSealingLag": {"blume_audit_sealing_lag_seconds"},
    "BlumeAuditVerifyFailed": {"kube_job_status_failed"},
    "BlumeSmtpFailureRate": {"blume_emails_total"},
}


def product_metrics() -> set[str]:
    """The sample names blume_runtime.metrics exposes."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            [family] = value.describe()
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects (it must parse)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), pre_visit=visit)
    return found


def _rules() -> list[dict[str, Any]]:
    rule = named(render("production"), "PrometheusRule", "blume-share")
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


def _dashboard() -> dict[str, Any]:
    data = config_map_data(render("production"), "blume-share-grafana-dashboard")
    loaded: dict[str, Any] = json.loads(data["blume-share.json"])
    return loaded


def test_the_product_metrics_are_the_ones_the_runtime_defines() -> None:
    """The names this test holds expressions against come from blume_runtime.metrics."""
    names = product_metrics()
    assert "blume_messages_handled_total" in names
    assert "blume_handler_duration_seconds_bucket" in names
    assert "blume_build_info" in names
    assert all(name.startswith("blume_") for name in names)


def test_the_required_alerts_exist_and_read_what_they_are_about() -> None:
    """A non-empty DLQ, a worker with no consumer, an outbox older than a minute, audit
    sealing lag, a failed audit verify, the SMTP failure rate: each an alert on its metric."""
    rules = {rule["alert"]: rule for rule in _rules()}
    for alert, needed in REQUIRED_ALERTS.items():
        assert needed <= metric_names(rules[alert]["expr"]), alert
    assert re.search(r"\b60\b", rules["BlumeOutboxBacklogOld"]["expr"])


def test_every_expression_parses_and_names_known_metrics() -> None:
    """Alert and dashboard expressions are valid PromQL over metrics that exist: the
    runtime's, RabbitMQ's and kube-state-metrics' (a renamed metric fails here)."""
    known = product_metrics() | EXTERNAL_METRICS
    expressions = [rule["expr"] for rule in _rules()]
    expressions += [
        target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]
    ]
    assert len(expressions) > 15
    for expression in expressions:
        assert metric_names(expression) <= known, expression


def test_a_misspelt_metric_is_caught() -> None:
    """The name check sees through functions and aggregations."""
    names = metric_names("sum by (service) (rate(blume_mesages_handled_total[5m])) > 0")
    assert names == {"blume_mesages_handled_total"}
    assert not names <= product_metrics()


def test_the_dashboard_shows_every_product_metric() -> None:
    """Each metric family of the runtime has a panel."""
    shown = set().union(
        *(metric_names(t["expr"]) for p in _dashboard()["panels"] for t in p["targets"])
    )
    families = {re.sub(r"_(total|bucket|sum|count|info)$", "", name) for name in product_metrics()}
    for family in families:
        assert any(name.startswith(family) for name in shown), family


def test_every_alert_links_to_its_runbook_section() -> None:
    """Each alert's runbook annotation is a heading of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("#")
    }
    for rule in _rules():
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md"
        assert anchor in anchors, rule["alert"]


def test_prometheus_scrapes_the_ops_port_of_every_runner() -> None:
    """The ServiceMonitor selects the headless ops Service, which selects every worker and
    gateway pod and targets their ops port."""
    production = render("production")
    monitor = named(production, "ServiceMonitor", "blume-share")
    service = named(production, "Service", "blume-share-ops")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    runners = [
        item
        for item in of_kind(production, "Deployment")
        if service["spec"]["selector"].items()
        <= item["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(runners) == len(SERVICES) + 1  # the workers and the gateway
    assert (K8S / "base" / "monitoring" / "grafana-dashboard.json").is_file()
