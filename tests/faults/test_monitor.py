"""Which queues the suite waits on and judges: the running workers' own, nothing else."""

from __future__ import annotations

from typing import Any, cast

from tests.faults.broker import RabbitCluster
from tests.faults.monitor import leftover_messages


class ListedQueues:
    """Stands in for the cluster's ``rabbitmqctl list_queues``."""

    nodes = ("node-1", "node-2")

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows

    def queue_table(self, _node: Any, *_columns: str) -> list[tuple[str, str, str]]:
        return self.rows


def test_only_the_running_workers_queues_count_as_left_over() -> None:
    """A running worker's service and delay queues count (ready plus unacknowledged); its DLQ,
    a queue of a service the suite does not run (the gateway's, from the definitions) and
    another client's queue do not, and a name that merely begins like a worker's does not."""
    cluster = ListedQueues(
        [
            ("blume.share.notifier", "2", "1"),
            ("blume.share.notifier.delay.4s", "1", "0"),
            ("blume.share.notifier.dlq", "5", "0"),
            ("blume.share.access_gateway", "486", "0"),
            ("blume.share.notifier_archive", "7", "0"),
            ("blume-chaos.observer", "9", "0"),
        ]
    )
    left = leftover_messages(cast(RabbitCluster, cluster), ["notifier", "audit_sink"])
    assert left == {"blume.share.notifier": 3, "blume.share.notifier.delay.4s": 1}
