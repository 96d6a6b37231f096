"""The built-in viewer in Chromium on a real PACS (Orthanc with DICOMweb): a recipient and a
patient see a synthesised two-series study's images through the gateway's scoped proxy,
whose URLs carry no UID and no PHI; the proxy reaches only the granted study and stops the
moment the share ends."""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from blume_access_gateway.viewer import GRANT_CACHE_SECONDS
from playwright.async_api import BrowserContext, Page, expect

from services.access_gateway.tests.fake_idp import FakeIdentityProvider
from tests.browser.conftest import PORTAL_SECRET, email_text, link_in, save_screenshot
from tests.conftest import RunningSystem, blume_share, request_event
from tests.pacs import Pacs, StudyFacts

# A real Orthanc, RabbitMQ, PostgreSQL, the whole system and Chromium per test: slower
# than the default 120 s on a loaded machine.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.timeout(300),
]

TENANT = "demo-hospital"
ACCOUNT = {
    "blume_patient_id": "bp-0001",
    "tenant_id": TENANT,
    "mrn": "MRN-SYNTH-4411",
    "email": "josee.tremblay@mail.example",
    "locale": "en-CA",
    "email_notifications": True,
    "status": "active",
    "consent": [],
}
OTHER_ACCOUNT = {**ACCOUNT, "blume_patient_id": "bp-0002", "mrn": "MRN-OTHER-0002"}
OTHER_ACCOUNT["email"] = "someone.else@mail.example"

PIXELS_JS = """
() => {
  const image = document.querySelector('[data-frame]');
  const canvas = document.createElement('canvas');
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0, sum = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] > 16) { lit += 1; }
    sum = (sum * 31 + data[i]) % 1000000007;
  }
  return {width: image.naturalWidth, lit: lit, checksum: sum};
}
"""


def shown_js(series: int, image: int) -> str:
    return (
        "() => { const i = document.querySelector('[data-frame]');"
        f" return i.getAttribute('data-series-shown') === '{series}'"
        f" && i.getAttribute('data-image-shown') === '{image}'"
        " && i.complete && i.naturalWidth > 0; }"
    )


@pytest.fixture
def pacs_system(
    system_env: dict[str, str],
    amqp_url: str,
    database_url: str,
    tmp_path: Path,
    orthanc: Pacs,
    portal_idp: tuple[FakeIdentityProvider, str],
) -> Iterator[RunningSystem]:
    """``blume-share run`` whose tenant names the test Orthanc as its PACS."""
    policy = tmp_path / "tenants.yaml"
    policy.write_text(
        f"""
tenants:
  {TENANT}:
    display_name: Demo Hospital
    recipient_auth: none
    dicomweb_url: {orthanc.dicomweb_url}
    recipient_access: view_and_download
"""
    )
    gateway = f"http://127.0.0.1:{system_env['BLUME_HTTP_PORT']}"
    env = {
        **system_env,
        "BLUME_PUBLIC_BASE_URL": gateway,
        "BLUME_PORTAL_BASE_URL": f"{gateway}/blume",
        "BLUME_TENANT_POLICY_FILE": str(policy),
        "BLUME_PORTAL_OIDC_ISSUER": portal_idp[1],
        "BLUME_PORTAL_OIDC_CLIENT_ID": "blume-portal",
        "BLUME_PORTAL_OIDC_CLIENT_SECRET": PORTAL_SECRET,
    }
    running = RunningSystem(env, amqp_url, database_url, tmp_path / "system.log")
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"blume-share exited with {code} on SIGTERM:\n{running.logs()[-4000:]}"


def study_data(study: StudyFacts, **changes: Any) -> dict[str, Any]:
    data = request_event()["data"]
    data["study"].update(study_instance_uid=study.study_uid, modalities=["CT", "CR"])
    data["study"]["patient"].update(mrn=study.mrn, name=study.patient_name)
    data.update(changes)
    return dict(data)


async def share_study(system: RunningSystem, study: StudyFacts) -> str:
    system.publish(request_event(study_data(study)))
    [accepted] = await system.wait_for("share.accepted", correlationid=None)
    return str(accepted["data"]["share_id"])


async def open_viewer(system: RunningSystem, smtp: Any, context: BrowserContext) -> Page:
    """From the emailed link, View study, to the built-in viewer (policy: no sign-in)."""
    [message] = await smtp.wait_for(1)
    page = await context.new_page()
    await page.goto(link_in(message, system.http_base))
    await page.get_by_role("button", name="View study").click()
    await page.wait_for_url(re.compile(r"/view/r[0-9a-f]{32}$"))
    return page


def forbidden_in_urls(study: StudyFacts) -> list[str]:
    """What must never appear in a URL: every UID, the MRN, the patient's name (any form)."""
    family, given = study.patient_name.split("^")
    return [*study.uids, study.mrn, family, given, family.lower(), given.lower()]


async def test_recipient_sees_both_series_and_no_url_carries_a_uid_or_phi(
    pacs_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    orthanc: Pacs,
    tmp_path: Path,
) -> None:
    """The series list, a decoded non-blank image per series, the arrow keys and a CT
    preset change the image, the download is the study's files; every URL the browser
    asked for is free of UIDs, MRN and name; one BALP Read per series opened."""
    system = pacs_system
    study = orthanc.study
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    share_id = await share_study(system, study)
    page = await open_viewer(system, smtp_server, context)

    strip = page.locator("[data-series]")
    await expect(strip).to_have_count(2)
    await expect(strip.nth(0)).to_contain_text("Chest axial")
    await expect(strip.nth(0)).to_contain_text("CT")
    await expect(strip.nth(0)).to_contain_text("60 images")
    await expect(strip.nth(1)).to_contain_text("Chest PA")
    await expect(strip.nth(1)).to_contain_text("CR")
    await expect(strip.nth(1)).to_contain_text("3 images")

    await page.wait_for_function(shown_js(1, 1))
    first = await page.evaluate(PIXELS_JS)
    assert first["width"] == 512
    assert first["lit"] > 10_000  # a decoded CT slice, not a blank or broken image
    for _ in range(5):
        await page.keyboard.press("ArrowDown")
    await page.wait_for_function(shown_js(1, 6))
    sixth = await page.evaluate(PIXELS_JS)
    assert sixth["checksum"] != first["checksum"]
    await expect(page.locator("[data-position]")).to_have_text("6 / 60")

    await page.get_by_role("button", name="Lung").click()
    await page.wait_for_function(
        "() => { const i = document.querySelector('[data-frame]');"
        " return i.src.includes('window=-600,1500') && i.complete && i.naturalWidth > 0; }"
    )
    lung = await page.evaluate(PIXELS_JS)
    assert lung["checksum"] != sixth["checksum"]
    await page.get_by_role("button", name="Soft tissue").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-frame]').src.includes('window=40,400')"
        " && document.querySelector('[data-frame]').complete"
    )
    await save_screenshot(page, "viewer-ct", tmp_path)

    await strip.nth(1).click()
    await page.wait_for_function(shown_js(2, 1))
    radiograph = await page.evaluate(PIXELS_JS)
    assert radiograph["lit"] > 10_000
    await expect(page.locator("[data-presets]")).to_be_hidden()

    handle_base = page.url
    download = await page.request.get(f"{handle_base}/download")
    assert download.status == 200
    assert download.headers["cache-control"] == "no-store"
    with zipfile.ZipFile(io.BytesIO(await download.body())) as archive:
        names = archive.namelist()
    assert len(names) == 63
    assert names[0] == "series-001/image-0001.dcm"

    viewed = await system.wait_for("share.images.viewed", share_id=share_id)
    await system.wait_for("share.images.exported", share_id=share_id)
    viewed = system.events("share.images.viewed", share_id=share_id)
    assert sorted(event["data"]["series_number"] for event in viewed) == [1, 2]
    assert viewed[0]["data"]["client"]["client_ip"] == "127.0.0.1"

    frames = [url for url in requested if "/frames/" in url]
    assert len(frames) >= 8
    forbidden = forbidden_in_urls(study)
    for url in requested:
        for value in forbidden:
            assert value not in url, f"{value!r} in a URL the browser requested"


async def test_scope_other_handles_and_guessed_uids_are_not_found(
    pacs_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    orthanc: Pacs,
) -> None:
    """A made-up handle, another session's handle, a UID where a handle, series or image
    goes, or the PACS's own DICOMweb paths on the gateway: 404, never another study."""
    system = pacs_system
    study, other = orthanc.study, orthanc.other
    await share_study(system, study)
    page = await open_viewer(system, smtp_server, context)
    base = page.url
    handle = base.rsplit("/", 1)[1]
    own = await page.request.get(f"{base}/series/1/frames/1")
    assert own.status == 200
    assert own.headers["cache-control"] == "no-store"
    assert own.headers["content-type"] == "image/png"

    gateway = system.http_base
    other_series, other_instance = other.series[0].series_uid, other.series[0].instance_uids[0]
    probes = [
        f"{gateway}/view/r{secrets.token_hex(16)}/series/1/frames/1",
        f"{gateway}/view/p{secrets.token_hex(32)}/series/1/frames/1",
        f"{gateway}/view/{other.study_uid}",
        f"{gateway}/view/{other.study_uid}/series/1/frames/1",
        f"{base}/series/{other_series}/frames/1",
        f"{base}/series/1/frames/{other_instance}",
        f"{base}/series/3/frames/1",
        f"{base}/series/1/frames/61",
        f"{gateway}/dicom-web/studies/{other.study_uid}/series",
        f"{gateway}/view/{handle}/studies/{other.study_uid}",
    ]
    for probe in probes:
        answer = await page.request.get(probe)
        assert answer.status == 404, probe

    stranger = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        answer = await stranger.request.get(f"{base}/series/1/frames/1")
        assert answer.status == 404  # the handle without its session is nothing
    finally:
        await stranger.close()


async def test_revoke_stops_the_next_frame_within_a_second(
    pacs_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    orthanc: Pacs,
) -> None:
    """Mid-viewing, ``blume-share revoke``: the next frame request answers 410 within 1 s
    and the page says plainly that the study is no longer available."""
    system = pacs_system
    share_id = await share_study(system, orthanc.study)
    page = await open_viewer(system, smtp_server, context)
    await page.wait_for_function(shown_js(1, 1))
    frame = f"{page.url}/series/1/frames/2"
    assert (await page.request.get(frame)).status == 200

    revoked = blume_share("revoke", share_id, env=system.env)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    started = time.monotonic()
    status = 200
    while status == 200 and time.monotonic() - started < 5:
        status = (await page.request.get(frame)).status
    elapsed = time.monotonic() - started
    assert status == 410
    assert elapsed < 1.0, f"still served {elapsed:.2f} s after revoke returned"

    await page.keyboard.press("ArrowDown")
    await expect(page.locator("[data-gone]")).to_be_visible()
    await expect(page.locator("[data-gone]")).to_contain_text("no longer")
    reload = await page.goto(page.url)
    assert reload is not None
    assert reload.status == 410


async def test_expired_share_answers_410(
    pacs_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    orthanc: Pacs,
) -> None:
    """A share past its expiry: the viewer page and its frames answer 410."""
    system = pacs_system
    share_id = await share_study(system, orthanc.study)
    page = await open_viewer(system, smtp_server, context)
    base = page.url
    assert (await page.request.get(f"{base}/series/1/frames/1")).status == 200
    with psycopg.connect(system.database_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE access_gateway_links SET expires_at = now() - interval '1 second'"
            " WHERE share_id = %s",
            (share_id,),
        )
    # The row is moved behind the gateway's back (no event, not the clock): as a change
    # applied by another replica, it bites once the viewer's brief grant cache lapses.
    await asyncio.sleep(GRANT_CACHE_SECONDS)
    assert (await page.request.get(f"{base}/series/1/frames/1")).status == 410
    assert (await page.request.get(base)).status == 410


async def _sign_in_patient(page: Page, study_link: str, email: str) -> None:
    await page.goto(study_link)
    await page.wait_for_url("**/authorize?*")
    await page.fill("#login_email", email)
    await page.click("#sign-in")


async def test_patient_sees_their_entrys_images_and_no_one_elses(
    pacs_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    orthanc: Pacs,
    portal_idp: tuple[FakeIdentityProvider, str],
    tmp_path: Path,
) -> None:
    """The Blume patient's study page shows the same viewer with decoded images of their
    entry (no UID in any URL); another patient gets 404 for the page and the images."""
    system = pacs_system
    study = orthanc.study
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(json.dumps(ACCOUNT) + "\n" + json.dumps(OTHER_ACCOUNT) + "\n")
    imported = blume_share("patients", "import", str(accounts), env=system.env)
    assert imported.returncode == 0, imported.stderr
    provider, _issuer = portal_idp
    provider.users[ACCOUNT["email"]] = {"blume_patient_id": ACCOUNT["blume_patient_id"]}
    provider.users[OTHER_ACCOUNT["email"]] = {"blume_patient_id": OTHER_ACCOUNT["blume_patient_id"]}
    data = study_data(study, method="blume", patient_account={"blume_patient_id": "bp-0001"})
    data.pop("recipient")
    data.pop("expires_in_hours")
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    system.publish(request_event(data))
    [message] = await smtp_server.wait_for(1)
    [study_link] = set(
        re.findall(
            re.escape(system.http_base) + r"/blume/studies/ent_[0-9a-f]{32}", email_text(message)
        )
    )

    page = await context.new_page()
    await _sign_in_patient(page, study_link, str(ACCOUNT["email"]))
    await page.wait_for_url(study_link)
    await expect(page.locator("[data-series]")).to_have_count(2)
    await page.wait_for_function(shown_js(1, 1))
    pixels = await page.evaluate(PIXELS_JS)
    assert pixels["lit"] > 10_000
    await page.keyboard.press("ArrowDown")
    await page.wait_for_function(shown_js(1, 2))
    frame = await page.evaluate("() => document.querySelector('[data-frame]').src")
    assert (await page.request.get(frame)).status == 200
    [viewed] = await system.wait_for("share.images.viewed")
    assert viewed["data"]["audience"] == "patient"
    assert viewed["data"]["blume_patient_id"] == "bp-0001"
    for url in requested:
        for value in forbidden_in_urls(study):
            assert value not in url, f"{value!r} in a URL the browser requested"

    stranger = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        other = await stranger.new_page()
        await _sign_in_patient(other, study_link, str(OTHER_ACCOUNT["email"]))
        await expect(other.locator("h1")).to_have_text("Study not found")
        assert (await other.request.get(frame)).status == 404
    finally:
        await stranger.close()
