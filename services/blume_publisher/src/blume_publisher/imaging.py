"""The FHIR R5 ImagingStudy a record entry holds."""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from blume_contracts.events import BlumeStudy, StudySummary
from fhir.resources.imagingstudy import ImagingStudy

DICOM_UID_SYSTEM: Final = "urn:dicom:uid"
DICOM_MODALITY_SYSTEM: Final = "http://dicom.nema.org/resources/ontology/DCM"


def imaging_study(study: BlumeStudy, blume_patient_id: str) -> dict[str, Any]:
    """A validated ImagingStudy (JSON): status, subject, identifier, started, modality, text."""
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{blume_patient_id}"},
        "identifier": [
            {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"}
        ],
        "modality": [
            {"coding": [{"system": DICOM_MODALITY_SYSTEM, "code": modality}]}
            for modality in study.modalities
        ],
    }
    if study.study_date is not None:
        resource["started"] = study.study_date.isoformat()
    if study.description:
        resource["description"] = study.description
    validated: dict[str, Any] = ImagingStudy.model_validate(resource).model_dump(mode="json")
    return validated


def study_summary(resource: dict[str, Any]) -> StudySummary:
    """What ``share.blume.published`` tells the portal of an entry's ImagingStudy."""
    started = resource.get("started")
    modalities = [
        str(coding["code"])
        for concept in resource.get("modality", [])
        for coding in concept.get("coding", [])
        if coding.get("code")
    ]
    return StudySummary(
        study_date=date.fromisoformat(str(started)[:10]) if started else None,
        modalities=modalities,
        description=resource.get("description"),
    )
