"""``blume-share audit`` commands: query filters and formats, export, disclosures, checkpoints,
retention, holds, purge, API tokens; on the embedded default and, for verify against
exported checkpoints, on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import shutil
from pathlib import Path

import psycopg
import pytest
from blume_audit_sink.api import hash_token
from blume_share.cli import app
from blume_share.schema import upgrade
from fhir.resources.R4B.bundle import Bundle
from typer.testing import CliRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "src/blume_share/examples/study-send-request.json"
TENANT = "demo-hospital"


@pytest.fixture
def shared(cli: CliRunner, tmp_path: Path) -> CliRunner:
    """Two shares of MRN-0001 (to Bob and to Carol) and one of MRN-0002, run through."""
    example = json.loads(EXAMPLE.read_text())
    carol = {**example, "recipient": {"name": "Dr. Carol Ng", "email": "Carol.Ng@ortho.example"}}
    other = {
        **example,
        "study": {
            **example["study"],
            "patient": {**example["study"]["patient"], "mrn": "MRN-0002"},
        },
    }
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in (example, carol, other)) + "\n")
    result = cli.invoke(app, ["send", str(requests)])
    assert result.exit_code == 0, result.output
    return cli


def test_query_by_patient_recipient_sender_and_type(shared: CliRunner) -> None:
    """Each filter narrows the records; recipient matching ignores case."""

    def lines(*args: str) -> list[dict[str, object]]:
        result = shared.invoke(app, ["audit", "query", "--format", "jsonl", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    by_patient = lines("--patient", "MRN-0002")
    assert by_patient
    assert {r["patient_mrn"] for r in by_patient} == {"MRN-0002"}
    by_recipient = lines("--recipient", "carol.ng@ORTHO.example")
    assert {r["recipient_email"] for r in by_recipient} == {"carol.ng@ortho.example"}
    assert len({r["share_id"] for r in by_recipient}) == 1
    sent = lines("--sender", "u-123", "--type", "share.notification.sent")
    assert [r["event_type"] for r in sent] == ["share.notification.sent"] * 3
    assert lines("--tenant", "north-clinic") == []
    assert lines("--since", "2000-01-01", "--until", "2000-01-02") == []


def test_query_pages_and_csv(shared: CliRunner) -> None:
    """A full page says where the next begins; CSV has a header and one row per record."""
    first = shared.invoke(app, ["audit", "query", "--limit", "4"])
    assert first.exit_code == 0
    _header, *page = first.stdout.splitlines()
    assert len(page) == 4
    assert "next page: --offset 4" in first.stderr
    rows = list(
        csv.DictReader(
            io.StringIO(shared.invoke(app, ["audit", "query", "--format", "csv"]).stdout)
        )
    )
    # The first query, across tenants, is itself recorded in the operators' chain.
    shares = [row for row in rows if row["chain_id"] == TENANT]
    assert len(shares) == 18
    assert [row["event_type"] for row in rows if row["chain_id"] != TENANT] == [
        "ops.audit_log.read"
    ]


def test_export_fhir_validates_and_csv_jsonl_count_alike(shared: CliRunner, tmp_path: Path) -> None:
    """The FHIR Bundle parses with fhir.resources (R4B); CSV and JSONL hold the same records."""
    bundle_path = tmp_path / "bundle.json"
    result = shared.invoke(app, ["audit", "export", "--format", "fhir", "-o", str(bundle_path)])
    assert result.exit_code == 0, result.output
    bundle = Bundle.model_validate_json(bundle_path.read_text())
    assert len(bundle.entry or []) == 18
    jsonl = shared.invoke(app, ["audit", "export", "--format", "jsonl", "--patient", "MRN-0001"])
    exported = shared.invoke(app, ["audit", "export", "--format", "csv", "--patient", "MRN-0001"])
    assert len(jsonl.stdout.splitlines()) == 12
    # The CSV export also finds the JSONL export's own record, which names MRN-0001.
    assert len(exported.stdout.splitlines()) - 1 == 12 + 1


@pytest.mark.parametrize("output_format", ["csv", "json", "html"])
def test_disclosures_report_for_a_patient_with_several_shares(
    shared: CliRunner, output_format: str
) -> None:
    """MRN-0001 has two disclosures, to Bob and to Carol, in every format."""
    result = shared.invoke(
        app,
        [
            "audit",
            "disclosures",
            "--tenant",
            TENANT,
            "--patient",
            "MRN-0001",
            "--format",
            output_format,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 disclosures" in result.stderr
    assert "bob.jones@clinic.example" in result.stdout
    assert "carol.ng@ortho.example" in result.stdout.lower()
    assert "Dr. Dan" not in result.stdout


def test_checkpoint_then_verify_against_a_copy_of_the_files(
    shared: CliRunner, state_dir: Path, tmp_path: Path
) -> None:
    """`audit checkpoint` signs every head; `verify --checkpoints` uses an exported copy."""
    signed = shared.invoke(app, ["audit", "checkpoint"])
    assert signed.exit_code == 0, signed.output
    exported = tmp_path / "exported"
    shutil.copytree(state_dir / "audit-checkpoints", exported)
    verified = shared.invoke(app, ["audit", "verify", "--checkpoints", str(exported)])
    assert verified.exit_code == 0, verified.output
    assert "OK: 18 records in 1 chain, 1 signed checkpoint" in verified.stdout
    missing = shared.invoke(app, ["audit", "verify", "--checkpoints", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_retention_hold_and_purge_commands(shared: CliRunner) -> None:
    """Retention is set and shown; a hold is placed, listed, released; nothing young is purged."""
    assert shared.invoke(app, ["audit", "retention", "show", "--tenant", TENANT]).stdout == "2557\n"
    assert (
        shared.invoke(
            app, ["audit", "retention", "set", "--tenant", TENANT, "--days", "30"]
        ).exit_code
        == 0
    )
    assert shared.invoke(app, ["audit", "retention", "show", "--tenant", TENANT]).stdout == "30\n"
    hold_id = shared.invoke(
        app, ["audit", "hold", "place", "--tenant", TENANT, "--reason", "case 17"]
    ).stdout.strip()
    assert hold_id in shared.invoke(app, ["audit", "hold", "list"]).stdout
    released = shared.invoke(app, ["audit", "hold", "release", hold_id, "--reason", "closed"])
    assert released.exit_code == 0
    assert hold_id not in shared.invoke(app, ["audit", "hold", "list"]).stdout
    purge = shared.invoke(app, ["audit", "purge", "--tenant", TENANT])
    assert purge.exit_code == 1
    assert "nothing to purge" in purge.stderr


def test_keygen_and_api_token_print_what_the_configuration_needs(cli: CliRunner) -> None:
    """keygen: a usable signing key; api-token: a token and the hash entry that admits it."""
    from blume_audit_sink.signing_keys import private_key_from_text

    key = cli.invoke(app, ["audit", "keygen"])
    private_key_from_text(key.stdout)
    assert "public key" in key.stderr
    token = cli.invoke(app, ["audit", "api-token", "--label", "siem"])
    assert token.exit_code == 0
    assert f"siem:{hash_token(token.stdout.strip())}" in token.stderr
    assert cli.invoke(app, ["audit", "api-token", "--label", "a:b"]).exit_code == 2


@pytest.mark.integration
def test_verify_against_exported_checkpoints_names_the_cut_row_on_postgres(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state_dir: Path
) -> None:
    """On PostgreSQL, a tail cut by a superuser (triggers off, head and the database's
    checkpoints fixed up) passes plain verify but fails against the exported files."""
    from blume_audit_sink.signing_keys import new_private_key_text

    upgrade(database_url)
    checkpoint_dir = tmp_path / "worm"
    monkeypatch.setenv("BLUME_DATABASE_URL", database_url)
    monkeypatch.setenv("BLUME_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # never dialled
    monkeypatch.setenv("BLUME_AUDIT_SIGNING_KEY", new_private_key_text())
    monkeypatch.setenv("BLUME_AUDIT_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("BLUME_STATE_DIR", str(state_dir))
    monkeypatch.setenv("BLUME_LOG_FORMAT", "json")
    cli = CliRunner()
    with psycopg.connect(database_url, autocommit=True) as connection:
        for seq in range(1, 6):
            # Staged as the worker would; the checkpoint command seals them first.
            connection.execute(
                "INSERT INTO audit_pending (event_source, event_id, received_at, entry) "
                "VALUES ('/t', %s, now(), %s)",
                (f"e{seq}", _entry(seq)),
            )
    assert cli.invoke(app, ["audit", "checkpoint"]).exit_code == 0
    exported = tmp_path / "exported"
    shutil.copytree(checkpoint_dir, exported)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        connection.execute("DELETE FROM audit_records WHERE seq > 3")
        connection.execute(
            "UPDATE audit_chain_heads SET seq = 3, "
            "hash = (SELECT hash FROM audit_records WHERE seq = 3)"
        )
        connection.execute("DELETE FROM audit_checkpoints")
    shutil.rmtree(checkpoint_dir)

    plain = cli.invoke(app, ["audit", "verify"])
    assert plain.exit_code == 0, plain.output
    against = cli.invoke(app, ["audit", "verify", "--checkpoints", str(exported)])
    assert against.exit_code == 1
    assert f"BROKEN chain={TENANT} seq=4 truncated" in against.stdout


def _entry(seq: int) -> str:
    from blume_contracts.audit_entry import prepare
    from blume_contracts.envelope import RawEvent, now

    event = RawEvent(
        id=f"e{seq}",
        source="/t",
        type="share.accepted",
        time=now(),
        tenantid=TENANT,
        correlationid="c",
        data={"share_id": f"shr_{seq:032x}"},
    )
    return prepare(event).to_json()


def test_cli_reads_are_audited_with_operator_command_filters_and_count(
    shared: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """audit query, export, disclosures, status and patients show each leave a record with
    the OS user, BLUME_OPERATOR marked self-asserted, the command, filters and count;
    audit query then lists those reads."""
    monkeypatch.setenv("BLUME_OPERATOR", "dr.ops@demo.example")
    sent = shared.invoke(
        app, ["audit", "query", "--tenant", TENANT, "--type", "share.notification.sent"]
    )
    share_id = json.loads(
        shared.invoke(
            app, ["audit", "query", "--tenant", TENANT, "--limit", "1", "--format", "jsonl"]
        ).stdout
    )["share_id"]
    reads = [
        sent,
        shared.invoke(app, ["audit", "export", "--format", "jsonl", "--patient", "MRN-0002"]),
        shared.invoke(app, ["audit", "disclosures", "--tenant", TENANT, "--patient", "MRN-0001"]),
        shared.invoke(app, ["status", share_id]),
        shared.invoke(app, ["patients", "show", "bp-nobody"]),
    ]
    assert [result.exit_code for result in reads] == [0, 0, 0, 0, 1]
    listed = (
        shared.invoke(
            app, ["audit", "query", "--type", "ops.audit_log.read", "--format", "jsonl"]
        ).stdout.splitlines()
        + shared.invoke(
            app, ["audit", "query", "--type", "ops.records.read", "--format", "jsonl"]
        ).stdout.splitlines()
    )
    records = [json.loads(line) for line in listed]
    payloads = {record["data"]["command"]: record for record in records}
    assert set(payloads) == {
        "audit query",
        "audit export",
        "audit disclosures",
        "status",
        "patients show",
    }
    [query] = [
        record["data"]
        for record in records
        if record["data"]["command"] == "audit query" and "event_type" in record["data"]["filters"]
    ]
    assert query["filters"]["event_type"] == "share.notification.sent"
    assert query["returned"] == 3
    assert query["requested_by"] == pwd.getpwuid(os.getuid()).pw_name
    assert query["asserted_operator"] == "dr.ops@demo.example"
    assert "self-asserted" in query["operator_assertion"]
    assert payloads["audit export"]["data"]["returned"] > 0
    assert payloads["audit export"]["patient_mrn"] == "MRN-0002"
    assert payloads["audit disclosures"]["data"]["returned"] == 2
    assert payloads["status"]["share_id"] == share_id
    assert payloads["status"]["chain_id"] == TENANT
    assert payloads["patients show"]["data"]["returned"] == 0
