"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian's ``orthanc`` and
``orthanc-dicomweb``), started on free ports with a storage directory of its own, and the
studies the tests look at: synthesised with pydicom and numpy, plus pydicom's bundled files.

Never the system's Orthanc service: ``OrthancServer`` runs ``Orthanc <config.json>`` as a
child process and stops it. The ``orthanc`` fixture (tests/conftest.py) starts one per test
run; the viewer benchmark (``bench.viewer_proxy``) uses the same class.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Final

import httpx
import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ORTHANC: Final = os.environ.get("BLUME_TEST_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN: Final = os.environ.get(
    "BLUME_TEST_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)
CR_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.1"
CT_SLICES: Final = 60
CR_IMAGES: Final = 3
SIDE: Final = 512


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    series_uid: str
    modality: str
    description: str
    instance_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What the tests know of a study they uploaded (and must never see in a URL)."""

    study_uid: str
    patient_name: str
    mrn: str
    series: tuple[SeriesFacts, ...]

    @property
    def uids(self) -> list[str]:
        return [
            self.study_uid,
            *(s.series_uid for s in self.series),
            *(uid for s in self.series for uid in s.instance_uids),
        ]


def _base(study_uid: str, patient_name: str, mrn: str, modality: str, sop_class: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.PatientName = patient_name
    ds.PatientID = mrn
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date(2026, 11, 3).strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC-SYNTH-1"
    ds.StudyDescription = "CT chest and CR chest"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = SIDE
    ds.Columns = SIDE
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def _encode(ds: Dataset) -> bytes:
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _phantom(index: int, count: int) -> np.ndarray:
    """A body-like ellipse with a 'lesion' whose size follows the slice: every slice differs."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    centre = SIDE / 2
    body = ((x - centre) / 200) ** 2 + ((y - centre) / 160) ** 2 <= 1
    lung = (((x - centre + 45) / 30) ** 2 + ((y - centre) / 45) ** 2 <= 1) | (
        ((x - centre - 45) / 30) ** 2 + ((y - centre) / 45) ** 2 <= 1
    )
    radius = 6 + 30 * index / max(1, count - 1)
    lesion = (x - centre) ** 2 + (y - centre - 30) ** 2 <= radius**2
    hu = np.full((SIDE, SIDE), -1000, dtype=np.int16)
    hu[body] = 40
    hu[lung] = -800
    hu[lesion] = 700
    return hu


def synthesise_study(patient_name: str, mrn: str) -> tuple[StudyFacts, list[bytes]]:
    """A two-series study: a 60-slice CT (rescale, window) and a 3-image CR."""
    study_uid = generate_uid()
    files: list[bytes] = []
    series: list[SeriesFacts] = []
    ct_uid, ct_instances = generate_uid(), []
    for index in range(CT_SLICES):
        ds = _base(study_uid, patient_name, mrn, "CT", CTImageStorage)
        ds.SeriesInstanceUID = ct_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Chest axial"
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.SliceThickness = 2.5
        ds.PixelSpacing = [0.8, 0.8]
        ds.ImagePositionPatient = [-102.4, -102.4, -index * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -index * 2.5
        ds.KVP = 120
        stored = (_phantom(index, CT_SLICES).astype(np.int32) + 1024).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ct_instances.append(ds.SOPInstanceUID)
        files.append(_encode(ds))
    series.append(SeriesFacts(ct_uid, "CT", "Chest axial", tuple(ct_instances)))
    cr_uid, cr_instances = generate_uid(), []
    for index in range(CR_IMAGES):
        ds = _base(study_uid, patient_name, mrn, "CR", CR_IMAGE_STORAGE)
        ds.SeriesInstanceUID = cr_uid
        ds.SeriesNumber = 2
        ds.SeriesDescription = "Chest PA"
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.PixelRepresentation = 0
        ds.BitsStored = 12
        ds.HighBit = 11
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        pixels = ((x + y * (index + 1)) % 4096).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        cr_instances.append(ds.SOPInstanceUID)
        files.append(_encode(ds))
    series.append(SeriesFacts(cr_uid, "CR", "Chest PA", tuple(cr_instances)))
    return StudyFacts(study_uid, patient_name, mrn, tuple(series)), files


def bundled_study() -> tuple[StudyFacts, list[bytes]]:
    """pydicom's bundled ``CT_small.dcm``: another patient's study, for scope tests."""
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    data = Path(path).read_bytes()
    ds = dcmread(BytesIO(data))
    facts = StudyFacts(
        str(ds.StudyInstanceUID),
        str(ds.PatientName),
        str(ds.PatientID),
        (
            SeriesFacts(
                str(ds.SeriesInstanceUID),
                str(ds.Modality),
                str(ds.get("SeriesDescription", "")),
                (str(ds.SOPInstanceUID),),
            ),
        ),
    )
    return facts, [data]


@dataclass
class OrthancServer:
    """``Orthanc config.json`` as a child process, on free ports, storing under ``home``."""

    home: Path
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> None:
        if shutil.which(ORTHANC) is None:
            raise RuntimeError(f"no Orthanc at {ORTHANC}: apt-get install orthanc orthanc-dicomweb")
        self.home.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "blume-test-pacs",
            "StorageDirectory": str(self.home / "storage"),
            "IndexDirectory": str(self.home / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "HttpThreadsCount": 16,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        }
        path = self.home / "orthanc.json"
        path.write_text(json.dumps(config))
        log = (self.home / "orthanc.log").open("wb")
        self._process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.home / 'orthanc.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within 30 s")
            time.sleep(0.1)

    def upload(self, files: list[bytes]) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for data in files:
                answer = client.post(
                    "/instances", content=data, headers={"content-type": "application/dicom"}
                )
                answer.raise_for_status()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


@dataclass(frozen=True, slots=True)
class Pacs:
    """The running test PACS and the studies on it."""

    server: OrthancServer
    study: StudyFacts
    """The synthesised two-series study (CT 60 slices, CR 3 images)."""
    other: StudyFacts
    """Another patient's study (pydicom's CT_small.dcm)."""

    @property
    def dicomweb_url(self) -> str:
        return self.server.dicomweb_url


SYNTH_PATIENT: Final = ("Tremblay^Josee", "MRN-SYNTH-4411")


def start_pacs(home: Path) -> Pacs:
    server = OrthancServer(home)
    server.start()
    try:
        study, files = synthesise_study(*SYNTH_PATIENT)
        other, other_files = bundled_study()
        server.upload(files + other_files)
    except BaseException:
        server.stop()
        raise
    return Pacs(server, study, other)
