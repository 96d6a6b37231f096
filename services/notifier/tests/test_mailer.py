"""Mailer adapters without a network: SMTP URL parsing, the mail drop folder, the choice."""

from __future__ import annotations

import stat
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from blume_notifier.mailer import (
    MailDropMailer,
    MailRejected,
    MailUnavailable,
    SmtpEndpoint,
    SmtpMailer,
    mailer_from_settings,
)
from blume_runtime.settings import Settings


def listing(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def simple_message(message_id: str = "<shr_abc.link@blume-share.example>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "no-reply@blume-share.example"
    message["To"] = "bob.jones@clinic.example"
    message["Subject"] = "Test"
    message["Message-ID"] = message_id
    message.set_content("Body\n")
    return message


def test_plain_smtp_url_gives_host_and_port() -> None:
    """``smtp://host:port`` (the pinned form) needs no credentials and no TLS setting."""
    endpoint = SmtpEndpoint.parse("smtp://mail.internal:2525")
    assert (endpoint.host, endpoint.port) == ("mail.internal", 2525)
    assert (endpoint.username, endpoint.password) == (None, None)
    assert (endpoint.use_tls, endpoint.start_tls) == (False, None)


def test_smtp_url_defaults_ports_by_scheme() -> None:
    """Without a port, smtp:// uses 25 and smtps:// uses 465 with implicit TLS."""
    assert SmtpEndpoint.parse("smtp://mail.internal").port == 25
    secure = SmtpEndpoint.parse("smtps://mail.internal")
    assert (secure.port, secure.use_tls, secure.start_tls) == (465, True, False)


def test_smtp_url_credentials_are_percent_decoded() -> None:
    """User and password come from the URL, percent-decoded (a password may contain '@')."""
    endpoint = SmtpEndpoint.parse("smtp://relay%40corp:p%40ss%3Aw0rd@mail.internal:587")
    assert endpoint.username == "relay@corp"
    assert endpoint.password == "p@ss:w0rd"


@pytest.mark.parametrize(("flag", "expected"), [("true", True), ("false", False), ("TRUE", True)])
def test_starttls_query_parameter(flag: str, expected: bool) -> None:
    """``?starttls=true`` requires the upgrade, ``false`` forbids it."""
    assert SmtpEndpoint.parse(f"smtp://mail.internal:587?starttls={flag}").start_tls is expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.internal:25", "scheme"),
        ("smtp://:25", "host"),
        ("smtp://mail.internal?starttls=maybe", "true or false"),
        ("smtps://mail.internal?starttls=true", "already TLS"),
    ],
)
def test_bad_smtp_urls_are_refused(url: str, problem: str) -> None:
    """Unknown schemes, missing hosts and contradictory TLS settings fail at start-up."""
    with pytest.raises(ValueError, match=problem):
        SmtpEndpoint.parse(url)


def test_smtp_password_never_appears_in_repr() -> None:
    """The mailer's repr (logs, tracebacks) shows the endpoint but not the password."""
    mailer = SmtpMailer("smtp://relay:hunter2secret@mail.internal:587", timeout=3)
    assert "hunter2secret" not in repr(mailer)
    assert "mail.internal" in repr(mailer)


def test_mail_errors_scrub_addresses() -> None:
    """Whatever the server said, a mail error's text never carries an email address."""
    error = MailRejected("550 5.1.1 <bob.jones@clinic.example>: mailbox unavailable")
    assert "bob.jones@clinic.example" not in str(error)
    assert "550 5.1.1" in str(error)


async def test_mail_drop_writes_one_parseable_eml_file(tmp_path: Path) -> None:
    """Each message becomes one .eml file, named after its Message-ID, readable back."""
    drop = MailDropMailer(tmp_path / "mail")
    await drop.send(simple_message())
    files = listing(tmp_path / "mail")
    assert [path.name for path in files] == ["shr_abc.link_blume-share.example.eml"]
    parsed = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert parsed["Subject"] == "Test"
    assert parsed["To"] == "bob.jones@clinic.example"


async def test_mail_drop_file_is_private_and_no_temporary_file_remains(tmp_path: Path) -> None:
    """The file (it holds a live link) is readable by its owner only; no .tmp is left over."""
    drop = MailDropMailer(tmp_path)
    await drop.send(simple_message())
    (written,) = listing(tmp_path)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert [path.name for path in listing(tmp_path)] == [written.name]


async def test_mail_drop_same_message_twice_leaves_one_file(tmp_path: Path) -> None:
    """Dropping a message again (a retry) replaces the file rather than adding a second."""
    drop = MailDropMailer(tmp_path)
    await drop.send(simple_message())
    await drop.send(simple_message())
    assert len(listing(tmp_path)) == 1


async def test_mail_drop_file_name_cannot_escape_the_folder(tmp_path: Path) -> None:
    """Path separators and dots in a Message-ID become underscores; the file stays put."""
    drop = MailDropMailer(tmp_path / "mail")
    await drop.send(simple_message("<../../etc/passwd@x/y>"))
    (written,) = listing(tmp_path / "mail")
    assert written.name == ".._.._etc_passwd_x_y.eml"
    assert written.parent == tmp_path / "mail"


async def test_mail_drop_without_message_id_is_refused(tmp_path: Path) -> None:
    """A message with no Message-ID has no stable name, so it is not silently dropped."""
    message = simple_message()
    del message["Message-ID"]
    with pytest.raises(ValueError, match="Message-ID"):
        await MailDropMailer(tmp_path).send(message)


async def test_unwritable_mail_drop_is_unavailable(tmp_path: Path) -> None:
    """A mail drop that cannot be written is a transient failure (retry), not a crash."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(MailUnavailable):
        await MailDropMailer(blocker).send(simple_message())


def test_settings_with_smtp_url_choose_smtp(tmp_path: Path) -> None:
    """BLUME_SMTP_URL set means SMTP, with the configured timeout."""
    settings = Settings(
        state_dir=tmp_path, smtp_url="smtp://mail.internal:2525", smtp_timeout_seconds=7
    )
    mailer = mailer_from_settings(settings)
    assert isinstance(mailer, SmtpMailer)
    assert mailer.endpoint.port == 2525
    assert mailer.timeout == 7


def test_settings_without_smtp_url_choose_the_mail_drop(tmp_path: Path) -> None:
    """No SMTP URL means the embedded default: the mail drop folder under the state dir."""
    mailer = mailer_from_settings(Settings(state_dir=tmp_path, smtp_url=None))
    assert isinstance(mailer, MailDropMailer)
    assert mailer.directory == tmp_path / "mail"
