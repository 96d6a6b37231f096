"""The gateway's DICOMweb client against a real Orthanc (DICOMweb plugin): QIDO-RS finds the
study and its series with their counts, WADO-RS metadata orders images by InstanceNumber,
rendered images come as PNG or JPEG with the window passed through, and WADO-RS retrieve
gives each DICOM file. Credentials are named by the tenant policy, never written in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from blume_access_gateway.dicomweb import AiohttpPacs, DicomwebClient, Instance, Pacs, Window
from blume_runtime.tenants import DicomwebCredentials, PolicyError, TenantPolicy
from pydicom import dcmread

from tests.pacs import Pacs as RunningPacs

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def client() -> AsyncIterator[DicomwebClient]:
    """The product's own client (aiohttp), as the gateway builds it."""
    http = AiohttpPacs()
    yield DicomwebClient(http)
    await http.aclose()


async def test_study_series_and_image_order(orthanc: RunningPacs, client: DicomwebClient) -> None:
    """The study's summary, its two series in series-number order with description,
    modality and count, and the CT's 60 images in InstanceNumber order."""
    pacs = Pacs(orthanc.dicomweb_url)
    study = await client.study(pacs, orthanc.study.study_uid)
    assert study is not None
    assert study.study_date == "20261103"
    assert study.description == "CT chest and CR chest"
    series = await client.series(pacs, orthanc.study.study_uid)
    assert [(s.description, s.modality, s.instances) for s in series] == [
        ("Chest axial", "CT", 60),
        ("Chest PA", "CR", 3),
    ]
    order = await client.instance_order(pacs, orthanc.study.study_uid, series[0].series_uid)
    assert order == list(orthanc.study.series[0].instance_uids)


async def test_a_study_not_on_the_pacs_is_none(
    orthanc: RunningPacs, client: DicomwebClient
) -> None:
    """QIDO-RS for a UID the PACS does not hold: None, not an error."""
    pacs = Pacs(orthanc.dicomweb_url)
    assert await client.study(pacs, "1.2.826.0.1.3680043.8.498.999999999") is None


async def test_rendered_png_jpeg_and_window(orthanc: RunningPacs, client: DicomwebClient) -> None:
    """PNG and JPEG by Accept; a lung window renders the same slice differently."""
    pacs = Pacs(orthanc.dicomweb_url)
    ct = orthanc.study.series[0]
    slice_31 = Instance(pacs, orthanc.study.study_uid, ct.series_uid, ct.instance_uids[30])
    bodies = {}
    for accept, window in (
        ("image/png", None),
        ("image/jpeg", None),
        ("image/png", Window(-600, 1500)),
    ):
        response = await client.open_rendered(slice_31, accept=accept, window=window)  # type: ignore[arg-type]
        try:
            assert response.status == 200
            assert response.headers["content-type"] == accept
            bodies[(accept, window)] = b"".join([chunk async for chunk in response.chunks()])
        finally:
            response.close()
    assert bodies[("image/png", None)].startswith(PNG)
    assert bodies[("image/jpeg", None)].startswith(b"\xff\xd8")
    assert bodies[("image/png", Window(-600, 1500))] != bodies[("image/png", None)]


async def test_instance_file_is_the_dicom_file(
    orthanc: RunningPacs, client: DicomwebClient
) -> None:
    """WADO-RS retrieve, unwrapped from its multipart answer: the instance asked for."""
    pacs = Pacs(orthanc.dicomweb_url)
    cr = orthanc.study.series[1]
    data = await client.instance_file(
        Instance(pacs, orthanc.study.study_uid, cr.series_uid, cr.instance_uids[0])
    )
    assert dcmread(BytesIO(data)).SOPInstanceUID == cr.instance_uids[0]


def test_credentials_come_from_the_environment_or_a_mounted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bearer from an environment variable, basic from a mounted file; a missing secret is
    a PolicyError naming where it was looked for, never a request without credentials."""
    monkeypatch.setenv("BLUME_TEST_PACS_TOKEN", "tok-123")
    bearer = TenantPolicy(
        display_name="A",
        dicomweb_url="https://pacs.test/dicom-web/",  # type: ignore[arg-type]
        dicomweb_credentials=DicomwebCredentials(
            scheme="bearer", secret_env="BLUME_TEST_PACS_TOKEN"
        ),
    )
    assert Pacs.for_policy(bearer) == Pacs("https://pacs.test/dicom-web", "Bearer tok-123")
    secret = tmp_path / "pacs-password"
    secret.write_text("s3cret\n")
    basic = bearer.model_copy(
        update={
            "dicomweb_credentials": DicomwebCredentials(
                scheme="basic", username="blume", secret_file=secret
            )
        }
    )
    assert Pacs.for_policy(basic) == Pacs("https://pacs.test/dicom-web", "Basic Ymx1bWU6czNjcmV0")
    monkeypatch.delenv("BLUME_TEST_PACS_TOKEN")
    with pytest.raises(PolicyError, match="BLUME_TEST_PACS_TOKEN is not set"):
        Pacs.for_policy(bearer)
    with pytest.raises(ValueError, match="exactly one"):
        DicomwebCredentials(scheme="bearer")


async def test_the_products_pacs_client_reaches_the_pacs_through_the_sites_proxy(
    orthanc: RunningPacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site whose PACS is reached through an HTTP proxy (``HTTP_PROXY``) keeps working:
    the gateway's own client (aiohttp) sends its QIDO-RS request to the proxy,
    which forwards it to the PACS."""
    seen: list[str] = []

    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(str(request.url))
        target = str(request.url).replace("pacs.invalid", "127.0.0.1")
        async with (
            aiohttp.ClientSession() as upstream,
            upstream.get(
                target, headers={"Accept": request.headers.get("Accept", "*/*")}
            ) as answer,
        ):
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type=answer.content_type)

    server = web.Server(forward)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # Named by a host the machine cannot resolve: only the proxy can reach it.
    pacs_url = orthanc.dicomweb_url.replace("127.0.0.1", "pacs.invalid")
    assert "pacs.invalid" in pacs_url
    http = AiohttpPacs()
    try:
        study = await DicomwebClient(http).study(Pacs(pacs_url), orthanc.study.study_uid)
    finally:
        await http.aclose()
        await runner.cleanup()
    assert study is not None
    assert study.description == "CT chest and CR chest"
    assert seen
    assert all(url.startswith("http://pacs.invalid:") for url in seen)
