"""The blume-share command on the embedded default: exit codes, output, bad input."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from blume_runtime.settings import Settings
from blume_share.cli import app
from blume_share.operations import database
from typer.testing import CliRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "src/blume_share/examples/study-send-request.json"


def test_run_example_until_idle_reports_the_whole_path(cli: CliRunner, state_dir: Path) -> None:
    """The README's run command completes the example share, writes one email, verifies audit."""
    result = cli.invoke(app, ["run", "--example", "--until-idle"])
    assert result.exit_code == 0, result.output
    assert ": completed" in result.stdout
    assert "audit chain: intact, 6 records verified" in result.stdout
    emails = list((state_dir / "mail").glob("*.eml"))
    assert len(emails) == 1
    assert "DOE^JANE" not in emails[0].read_text()


def test_send_then_status(cli: CliRunner) -> None:
    """send runs requests through on the embedded default; status reads the share back."""
    sent = cli.invoke(app, ["send", str(EXAMPLE)])
    assert sent.exit_code == 0, sent.output
    share_id = sent.stdout.split()[1].rstrip(":")
    status = cli.invoke(app, ["status", share_id, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["state"] == "completed"


def test_status_shows_a_waiting_share_with_its_cause_and_start(
    cli: CliRunner, state_dir: Path
) -> None:
    """A share waiting on an outage reads "waiting: <error class> since <first failure>"."""
    sent = cli.invoke(app, ["send", str(EXAMPLE)])
    share_id = sent.stdout.split()[1].rstrip(":")
    with sqlite3.connect(state_dir / "blume-share.db") as database:
        database.execute(
            "UPDATE dispatcher_shares SET state = 'waiting', reason = 'smtp_unavailable', "
            "waiting_since = '2026-11-28 14:00:02.000000+00:00' WHERE share_id = ?",
            (share_id,),
        )
    status = cli.invoke(app, ["status", share_id])
    assert status.exit_code == 0, status.output
    assert status.stdout.splitlines()[0] == (
        "waiting: smtp_unavailable since 2026-11-28T14:00:02+00:00"
    )
    as_json = json.loads(cli.invoke(app, ["status", share_id, "--json"]).stdout)
    assert (as_json["state"], as_json["reason"]) == ("waiting", "smtp_unavailable")
    assert as_json["waiting_since"] == "2026-11-28T14:00:02+00:00"


def test_send_json_lines_with_a_rejected_request(cli: CliRunner, tmp_path: Path) -> None:
    """JSON Lines input: a bad request is rejected with its reason, the good one completes."""
    good = json.loads(EXAMPLE.read_text())
    bad = {**good, "locale": "de-DE"}
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = cli.invoke(app, ["send", str(requests)])
    assert result.exit_code == 1, result.output
    assert ": completed" in result.stdout
    assert ": rejected (unsupported_locale)" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"method": "external_link"}\nnot json\n', "line 2: not JSON"),
        ("[1]", "request 1: expected a JSON object"),
        ("", "no requests"),
        ('{"specversion": "1.0", "id": "x"}', "not a valid CloudEvent"),
    ],
)
def test_send_bad_input_exits_2_with_a_clear_message(
    cli: CliRunner, tmp_path: Path, content: str, message: str
) -> None:
    """Unreadable input is refused before anything is published, saying where it broke."""
    path = tmp_path / "input.json"
    path.write_text(content)
    result = cli.invoke(app, ["send", str(path)])
    assert result.exit_code == 2
    assert message in result.stderr


def test_send_missing_file_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    """A file that does not exist is a bad-input error, not a traceback."""
    result = cli.invoke(app, ["send", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_status_of_unknown_share_exits_1(cli: CliRunner) -> None:
    """An unknown share id answers no, with exit code 1."""
    result = cli.invoke(app, ["status", "shr_" + "0" * 32])
    assert result.exit_code == 1
    assert "no share" in result.stderr


def test_run_unknown_service_exits_2(cli: CliRunner) -> None:
    """Naming a service that does not exist is a usage error listing the known ones."""
    result = cli.invoke(app, ["run", "fax_sender"])
    assert result.exit_code == 2
    assert "share_dispatcher" in result.stderr


def test_audit_verify_detects_an_edited_row(cli: CliRunner, state_dir: Path) -> None:
    """audit verify passes on an untouched store and exits 1 naming the edited record."""
    assert cli.invoke(app, ["run", "--example", "--until-idle"]).exit_code == 0
    assert cli.invoke(app, ["audit", "verify"]).exit_code == 0
    with sqlite3.connect(state_dir / "blume-share.db") as connection:
        # The store refuses edits; someone with the file can drop the trigger first.
        connection.execute("DROP TRIGGER audit_records_no_update")
        connection.execute("UPDATE audit_records SET correlation_id = 'forged' WHERE seq = 3")
    result = cli.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "seq=3" in result.stdout


def test_audit_query_filters_by_type(cli: CliRunner) -> None:
    """audit query --type returns only that type, as JSON Lines with secrets fingerprinted."""
    assert cli.invoke(app, ["run", "--example", "--until-idle"]).exit_code == 0
    result = cli.invoke(app, ["audit", "query", "--type", "share.link.issued", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert record["event_type"] == "share.link.issued"
    assert record["data"]["sealed_link"].startswith("sha256:")


def test_keygen_prints_a_fernet_key(cli: CliRunner) -> None:
    """keygen prints a usable sealing key."""
    from cryptography.fernet import Fernet

    result = cli.invoke(app, ["keygen"])
    assert result.exit_code == 0
    assert (
        Fernet(result.stdout.strip().encode()).decrypt(
            Fernet(result.stdout.strip().encode()).encrypt(b"ok")
        )
        == b"ok"
    )


@pytest.mark.integration
def test_run_refuses_an_unmigrated_database(
    cli: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers do not start on a PostgreSQL database that was never migrated (exit 3)."""
    monkeypatch.setenv("BLUME_DATABASE_URL", database_url)
    result = cli.invoke(app, ["run", "share_dispatcher"])
    assert result.exit_code == 3
    assert "run blume-share migrate" in result.stderr


def test_run_reports_an_unreachable_database(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that cannot be reached is exit 3 with a message, not a traceback."""
    monkeypatch.setenv("BLUME_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = cli.invoke(app, ["run", "share_dispatcher"])
    assert result.exit_code == 3
    assert "database unreachable" in result.stderr


def test_revoke_ends_a_completed_share(cli: CliRunner, state_dir: Path) -> None:
    """revoke marks the share revoked, revokes its link and is idempotent; unknown is exit 1."""
    sent = cli.invoke(app, ["send", str(EXAMPLE)])
    share_id = sent.stdout.split()[1].rstrip(":")
    revoked = cli.invoke(app, ["revoke", share_id, "--reason", "wrong recipient", "--by", "u-9"])
    assert revoked.exit_code == 0, revoked.output
    assert f"share {share_id} revoked in" in revoked.stdout
    status = cli.invoke(app, ["status", share_id, "--json"])
    assert json.loads(status.stdout)["state"] == "revoked"
    with sqlite3.connect(state_dir / "blume-share.db") as connection:
        [(revoked_at, reason)] = connection.execute(
            "SELECT revoked_at, revoked_reason FROM link_issuer_links WHERE share_id = ?",
            (share_id,),
        ).fetchall()
    assert revoked_at is not None
    assert reason == "wrong recipient"
    again = cli.invoke(app, ["revoke", share_id])
    assert again.exit_code == 0
    assert "already revoked" in again.stdout
    assert cli.invoke(app, ["revoke", "shr_" + "0" * 32]).exit_code == 1


def test_a_fresh_state_directory_and_its_phi_files_are_the_owners_alone(
    cli: CliRunner, state_dir: Path
) -> None:
    """After the example runs on a fresh state directory, the directory is 0700 and the
    SQLite database (and its -wal/-shm), dropped emails, keys and logs are 0600."""
    assert not state_dir.exists()
    result = cli.invoke(app, ["run", "--example", "--until-idle"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    private = [
        *state_dir.glob("blume-share.db*"),
        *state_dir.glob("*.key"),
        *(state_dir / "mail").glob("*.eml"),
        *(state_dir / "logs").glob("*.jsonl"),
    ]
    names = {path.name for path in private}
    assert {"blume-share.db", "sealing.key"} <= names
    assert any(name.endswith(".eml") for name in names)
    assert any(name.endswith(".jsonl") for name in names)
    modes = {
        str(path.relative_to(state_dir)): oct(stat.S_IMODE(path.stat().st_mode)) for path in private
    }
    assert set(modes.values()) == {"0o600"}, modes
    for folder in (state_dir / "mail", state_dir / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_status_shows_the_links_open_and_access_counts(cli: CliRunner, state_dir: Path) -> None:
    """status shows how often the recipient opened the link and was granted access, and when
    (the dispatcher's counts from the gateway's events), in text and in JSON."""
    sent = cli.invoke(app, ["send", str(EXAMPLE)])
    share_id = sent.stdout.split()[1].rstrip(":")
    with sqlite3.connect(state_dir / "blume-share.db") as database:
        database.execute(
            "UPDATE dispatcher_shares SET opened_count = 2, accessed_count = 1, "
            "first_opened_at = '2026-11-28 14:00:00.000000+00:00', "
            "last_opened_at = '2026-11-28 14:05:00.000000+00:00', "
            "last_accessed_at = '2026-11-28 14:06:00.000000+00:00' WHERE share_id = ?",
            (share_id,),
        )
    status = cli.invoke(app, ["status", share_id])
    assert status.exit_code == 0, status.output
    assert "opened_count: 2" in status.stdout
    assert "accessed_count: 1" in status.stdout
    as_json = json.loads(cli.invoke(app, ["status", share_id, "--json"]).stdout)
    assert as_json["first_opened_at"] == "2026-11-28T14:00:00+00:00"
    assert as_json["last_opened_at"] == "2026-11-28T14:05:00+00:00"
    assert as_json["last_accessed_at"] == "2026-11-28T14:06:00+00:00"


def test_a_worker_process_pools_a_connection_per_delivery_in_flight(tmp_path: Path) -> None:
    """``blume-share run``'s database keeps a PostgreSQL connection for each delivery that
    may be in flight (``BLUME_PREFETCH``) and one for the outbox sweep: a notifier at full
    prefetch does not open and close a connection per transaction."""
    settings = Settings(
        database_url="postgresql://blume@127.0.0.1:5432/unused", prefetch=40, state_dir=tmp_path
    )
    db = database(settings)
    assert db.engine.sync_engine.pool.size() == 41  # type: ignore[attr-defined]
