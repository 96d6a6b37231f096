"""``blume-share launch-client create | list | revoke`` and ``blume-share launch`` on the
embedded default (its own SQLite file): the token is printed once and kept only hashed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from blume_share.cli import app
from typer.testing import CliRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "src/blume_share/examples/launch-request.json"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("BLUME_AMQP_URL", "BLUME_DATABASE_URL", "BLUME_LAUNCH_CLIENT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BLUME_STATE_DIR", str(tmp_path / "state"))
    return CliRunner()


def test_create_list_revoke(runner: CliRunner, tmp_path: Path) -> None:
    """create prints an lc_ token once; the database holds only its hash; list shows the
    client active, then revoked after revoke; revoking an unknown id exits 1."""
    created = runner.invoke(
        app, ["launch-client", "create", "--tenant", "demo-hospital", "--name", "omegaai"]
    )
    assert created.exit_code == 0, created.output
    [token] = re.findall(r"lc_[A-Za-z0-9_-]{40,}", created.output)
    [client_id] = re.findall(r"lcl_[0-9a-f]{16}", created.output)
    database = (tmp_path / "state" / "blume-share.db").read_bytes()
    assert token.encode() not in database
    listed = runner.invoke(app, ["launch-client", "list"])
    assert f"{client_id}\tdemo-hospital\tomegaai\t" in listed.output
    assert listed.output.rstrip().endswith("active")
    assert token not in listed.output
    assert runner.invoke(app, ["launch-client", "revoke", client_id]).exit_code == 0
    assert "active" not in runner.invoke(app, ["launch-client", "list"]).output
    assert runner.invoke(app, ["launch-client", "revoke", "lcl_unknown"]).exit_code == 1


def test_launch_reports_bad_input_and_an_unreachable_gateway(
    runner: CliRunner, tmp_path: Path
) -> None:
    """An unreadable body exits 2; a gateway that does not answer exits 1 with the reason."""
    body = tmp_path / "launch.json"
    body.write_text("{not json")
    arguments = ["launch", "--tenant", "demo-hospital", "--request", str(body), "--token", "lc_x"]
    assert runner.invoke(app, arguments).exit_code == 2
    arguments[arguments.index(str(body))] = str(EXAMPLE)
    unreachable = runner.invoke(app, [*arguments, "--api-url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 1
    assert "did not answer" in unreachable.output
