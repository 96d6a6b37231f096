"""The first run, as a newcomer sees it: the summary, where the logs went, exit codes, counts,
the audit table's header, "processing" versus "no such share", and the help text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import structlog
import typer
from blume_runtime.settings import Settings
from blume_share.cli import app
from blume_share.cli_support import counted
from blume_share.logfiles import KEEP, start_logging
from pydantic import SecretStr
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cli/src/blume_share/examples/study-send-request.json"
PATIENTS = ROOT / "cli/src/blume_share/examples/patients.jsonl"


def example(**changes: Any) -> dict[str, Any]:
    return {**json.loads(EXAMPLE.read_text()), **changes}


def write_requests(path: Path, *requests: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(request) + "\n" for request in requests))
    return path


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_prints_five_lines_and_logs_to_a_file(tmp_path: Path) -> None:
    """`make run` prints only the summary; the logs are JSON lines in the file it names."""
    state = tmp_path / ".blume"
    # As a newcomer's shell has it: no BLUME_* settings, no outer make or virtualenv.
    outer = ("BLUME_", "MAKE", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(outer)}
    result = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env={**env, "BLUME_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    share, emails, email, audit, logs = result.stdout.splitlines()
    share_id = re.fullmatch(r"share (shr_[0-9a-f]{32}): completed", share)
    assert share_id is not None, share
    assert emails == f"1 email in {(state / 'mail').resolve()}"
    assert Path(email.strip()).is_file()
    assert Path(email.strip()).name.startswith(share_id.group(1))
    assert audit.startswith("audit chain: intact, 6 records verified in sqlite:///")
    log = Path(logs.removeprefix("logs: "))
    assert log.parent == (state / "logs").resolve()
    events = log_lines(log)
    assert "runtime started" in {line["event"] for line in events}
    assert share_id.group(1) in {line.get("share_id") for line in events}


def test_run_on_rabbitmq_keeps_logging_json_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a broker configured the logs stay on stderr for the container platform; no file."""
    settings = Settings(
        amqp_url=SecretStr("amqp://guest:guest@rabbit:5672/"), state_dir=tmp_path, log_format="auto"
    )
    assert start_logging(settings) is None
    structlog.get_logger("probe").info("hello from production")
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["event"] == "hello from production"
    assert not (tmp_path / "logs").exists()


def test_embedded_logs_open_on_the_first_line_and_keep_the_newest(tmp_path: Path) -> None:
    """A command that logs nothing leaves no file; the newest files are kept, older ones go."""
    logs = tmp_path / "logs"
    logs.mkdir()
    older = [logs / f"19700101T0000{n:02d}.000Z-1.jsonl" for n in range(KEEP + 5)]
    for path in older:
        path.write_text("{}\n")
    path = start_logging(Settings(state_dir=tmp_path, log_format="auto"))
    assert path is not None
    assert not path.exists()
    structlog.get_logger("probe").info("first line")
    assert [line["event"] for line in log_lines(path)] == ["first line"]
    assert sorted(logs.iterdir()) == [*older[-(KEEP - 1) :], path]


def test_send_exits_1_for_a_rejected_share_and_prints_its_reason(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Each rejected share is listed with its reason code and the dispatcher's own message."""
    requests = write_requests(
        tmp_path / "requests.jsonl",
        example(locale="de-DE"),
        example(recipient={"name": "Dr. Bob Jones", "email": "not-an-address"}),
        example(expires_in_hours=100_000),
    )
    result = cli.invoke(app, ["send", str(requests)])

    assert result.exit_code == 1, result.output
    assert "3 of 3 shares did not complete" in result.stderr
    query = cli.invoke(app, ["audit", "query", "--type", "share.rejected", "--format", "jsonl"])
    rejections = [json.loads(line)["data"] for line in query.stdout.splitlines()]
    assert len(rejections) == 3
    for rejected in rejections:
        line = f"share {rejected['share_id']}: rejected ({rejected['reason']}) - "
        assert line + rejected["message"] in result.stdout.splitlines()


@pytest.mark.integration
def test_the_summary_masks_the_database_password(
    cli: CliRunner, migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the summary names the database without its password."""
    parts = urlsplit(migrated_database_url)
    # Under trust authentication any password is accepted; otherwise the URL carries one.
    password = parts.password or "a-password-trust-ignores"
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"
    monkeypatch.setenv("BLUME_DATABASE_URL", urlunsplit(parts._replace(netloc=netloc)))
    result = cli.invoke(app, ["run", "--example", "--until-idle"])

    assert result.exit_code == 0, result.output
    assert password not in result.stdout
    assert f"in postgresql://{user}:***@{parts.hostname}" in result.stdout


def test_send_exits_0_when_every_share_completes(cli: CliRunner) -> None:
    """The bundled request completes: exit 0, and nothing on stderr but what was asked."""
    result = cli.invoke(app, ["send", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_the_emails_line_counts_and_lists_this_runs_messages(
    cli: CliRunner, tmp_path: Path, state_dir: Path
) -> None:
    """ "2 emails" lists two files, those this run wrote, not what earlier runs left behind."""
    assert cli.invoke(app, ["send", str(EXAMPLE)]).exit_code == 0
    carol = {"name": "Dr. Carol Ng", "email": "carol.ng@ortho.example"}
    requests = write_requests(tmp_path / "two.jsonl", example(), example(recipient=carol))
    result = cli.invoke(app, ["send", str(requests)])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    mail = (state_dir / "mail").resolve()
    assert f"2 emails in {mail}" in lines
    listed = [Path(line.strip()) for line in lines if line.startswith("  ")]
    share_ids = re.findall(r"^share (shr_[0-9a-f]{32}): completed$", result.stdout, re.MULTILINE)
    assert len(listed) == 2
    assert sorted(path.name.split(".")[0] for path in listed) == sorted(share_ids)
    assert len(list(mail.glob("*.eml"))) == 3


@pytest.mark.parametrize(
    ("count", "noun", "plural", "expected"),
    [
        (0, "record", None, "0 records"),
        (1, "record", None, "1 record"),
        (2, "record", None, "2 records"),
        (1, "entry", "entries", "1 entry"),
        (3, "entry", "entries", "3 entries"),
    ],
)
def test_counted_is_singular_for_one_only(
    count: int, noun: str, plural: str | None, expected: str
) -> None:
    """One of a thing is singular; none and many are plural, irregular plurals included."""
    assert counted(count, noun, plural) == expected


def test_importing_one_account_says_one_account(cli: CliRunner, tmp_path: Path) -> None:
    """ "1 account created" for one; the bundled file's count in the plural."""
    one = tmp_path / "one.jsonl"
    one.write_text(PATIENTS.read_text().splitlines()[0] + "\n")
    assert cli.invoke(app, ["patients", "import", str(one)]).stdout == (
        "1 account created, 0 updated\n"
    )
    every = len(PATIENTS.read_text().splitlines())
    again = cli.invoke(app, ["patients", "import", str(PATIENTS)])
    assert again.stdout == f"{counted(every - 1, 'account')} created, 1 updated\n"


def test_audit_query_table_has_a_header_row_over_aligned_columns(cli: CliRunner) -> None:
    """The first row names the columns; every cell starts where its column's name starts."""
    assert cli.invoke(app, ["send", str(EXAMPLE)]).exit_code == 0
    result = cli.invoke(app, ["audit", "query"])

    header, *rows = result.stdout.splitlines()
    names = header.split()
    assert names[:4] == ["occurred_at", "chain_id", "seq", "event_type"]
    assert names[4:] == ["action", "outcome", "share_id", "patient_mrn"]
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    table = [[row[a:b].strip() for a, b in zip(starts, ends, strict=True)] for row in rows]
    # Each cell cut at its column's bounds is one whole value: the columns line up.
    assert all(len(cell.split()) == 1 for cells in table for cell in cells), rows
    assert [cells[1:3] for cells in table] == [["demo-hospital", str(n)] for n in range(1, 7)]
    assert table[0][3] == "study.send.requested"


def test_status_tells_not_found_from_still_being_processed(cli: CliRunner, tmp_path: Path) -> None:
    """A request only the audit sink has seen is "processing"; an unknown id is exit 1."""
    requests = write_requests(tmp_path / "one.jsonl", example())
    audit_only = cli.invoke(app, ["run", "audit_sink", "--send", str(requests), "--until-idle"])
    [share_id] = re.findall(r"^share (shr_[0-9a-f]{32}): not recorded", audit_only.stdout, re.M)

    as_json = cli.invoke(app, ["status", share_id, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["state"] == "processing"
    as_text = cli.invoke(app, ["status", share_id])
    assert "state: processing" in as_text.stdout
    unknown = cli.invoke(app, ["status", "shr_" + "0" * 32])
    assert unknown.exit_code == 1
    assert "no share" in unknown.stderr


def _commands(command: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def test_no_help_text_shows_a_type_or_name_placeholder() -> None:
    """Every command's --help reads as prose: no <bool>, <str> or {share_id} placeholders."""
    runner = CliRunner()
    commands = _commands(typer.main.get_command(app), [])
    assert len(commands) > 25
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], prog_name="blume-share")
        assert result.exit_code == 0, (path, result.output)
        assert not re.search(r"<[a-z_]+>|\{[a-z_]+\}", result.stdout), (path, result.stdout)
    usage = runner.invoke(app, ["status", "--help"], prog_name="blume-share").stdout
    assert "blume-share status [OPTIONS] SHARE_ID" in usage
