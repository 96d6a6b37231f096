"""Registry and bindings, one source of truth: each worker's queue is bound by exactly the
event types the contract registry names it a consumer of (the audit sink by ``#``, as it
consumes every type)."""

from __future__ import annotations

from pathlib import Path

import pytest
from blume_contracts.registry import EVENTS, consumed_by
from blume_runtime.settings import Settings
from blume_share.services import WORKERS


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_each_worker_binds_what_the_registry_says_it_consumes(name: str, tmp_path: Path) -> None:
    """A handler without a registry entry, or a consumer the registry names without a
    handler, fails here instead of silently losing or never receiving events."""
    service = WORKERS[name](Settings(_env_file=None, state_dir=tmp_path))
    bound = set(service.queue.binding_keys)
    if bound == {"#"}:
        assert set(consumed_by(name)) == set(EVENTS), f"{name} binds # but misses types"
        return
    assert bound == set(consumed_by(name))
