"""Registry and bindings, one source of truth: each worker's queue is bound by exactly the
event types the contract registry names it a consumer of (the audit sink, which records every
type, by those no producer of ours stages, and by the unrouted exchange)."""

from __future__ import annotations

from pathlib import Path

import pytest
from blume_contracts.registry import EVENTS, consumed_by
from blume_runtime.settings import Settings
from blume_runtime.unit_of_work import AUDITED_FROM_THE_EXCHANGE
from blume_share.services import WORKERS


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_each_worker_binds_what_the_registry_says_it_consumes(name: str, tmp_path: Path) -> None:
    """A handler without a registry entry, or a consumer the registry names without a
    handler, fails here instead of silently losing or never receiving events."""
    service = WORKERS[name](Settings(_env_file=None, state_dir=tmp_path))
    bound = set(service.queue.binding_keys)
    if service.queue.binds_unrouted:  # the audit sink: every type, most staged by producers
        assert set(consumed_by(name)) == set(EVENTS), f"{name} records every type"
        assert bound == set(AUDITED_FROM_THE_EXCHANGE)
        return
    assert bound == set(consumed_by(name))
