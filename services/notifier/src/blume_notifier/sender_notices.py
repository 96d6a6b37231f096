"""The sender's emails: what became of a share they sent, in their request's language.

A share was rejected, failed, revoked (a consent directive, say), or its recipient was first
granted access. The email names the share by its id and the recipient by a masked address,
and gives the reason in words; never the patient, the study or the sender's message.
"""

from __future__ import annotations

from email.message import Message
from typing import Final, Unpack

from blume_contracts.display import display_name
from blume_contracts.events import SenderNotificationRequested
from blume_contracts.locales import Locale

from blume_notifier.mime import Mailbox
from blume_notifier.render import Stamp, compose, render

_REASONS: Final[dict[str, dict[Locale, str]]] = {
    "invalid_envelope": {
        "en-CA": "the request was not a well-formed message",
        "fr-CA": "la demande n'était pas un message bien formé",
    },
    "malformed_request": {
        "en-CA": "the request could not be read",
        "fr-CA": "la demande n'a pas pu être lue",
    },
    "unknown_method": {
        "en-CA": "the way of sharing was not recognised",
        "fr-CA": "le mode de partage n'a pas été reconnu",
    },
    "unknown_tenant": {
        "en-CA": "your organisation is not set up for Blume Share",
        "fr-CA": "votre organisation n'est pas configurée pour Blume Share",
    },
    "tenant_mismatch": {
        "en-CA": "the request named another organisation",
        "fr-CA": "la demande nommait une autre organisation",
    },
    "invalid_recipient_email": {
        "en-CA": "the recipient's email address is not valid",
        "fr-CA": "l'adresse courriel du destinataire n'est pas valide",
    },
    "invalid_recipient_name": {
        "en-CA": "the recipient's name is not valid",
        "fr-CA": "le nom du destinataire n'est pas valide",
    },
    "invalid_sender": {
        "en-CA": "the sender's details are not valid",
        "fr-CA": "les renseignements sur l'expéditeur ne sont pas valides",
    },
    "invalid_study_uid": {
        "en-CA": "the study's identifier is not valid",
        "fr-CA": "l'identifiant de l'examen n'est pas valide",
    },
    "invalid_study": {
        "en-CA": "the study's details are not valid",
        "fr-CA": "les renseignements sur l'examen ne sont pas valides",
    },
    "invalid_patient": {
        "en-CA": "the patient's details are not valid",
        "fr-CA": "les renseignements sur le patient ne sont pas valides",
    },
    "unsupported_locale": {
        "en-CA": "the language asked for is not offered",
        "fr-CA": "la langue demandée n'est pas offerte",
    },
    "invalid_expiry": {
        "en-CA": "the link's lifetime is not valid",
        "fr-CA": "la durée de validité du lien n'est pas valide",
    },
    "expiry_exceeds_policy": {
        "en-CA": "the link's lifetime is longer than your organisation allows",
        "fr-CA": "la durée de validité du lien dépasse ce que permet votre organisation",
    },
    "message_too_long": {
        "en-CA": "the message is too long",
        "fr-CA": "le message est trop long",
    },
    "missing_recipient": {
        "en-CA": "no recipient was given",
        "fr-CA": "aucun destinataire n'a été indiqué",
    },
    "missing_patient_account": {
        "en-CA": "no Blume account was given for the patient",
        "fr-CA": "aucun compte Blume n'a été indiqué pour le patient",
    },
    "patient_not_enrolled": {
        "en-CA": "the patient has no active Blume account",
        "fr-CA": "le patient n'a pas de compte Blume actif",
    },
    "patient_mismatch": {
        "en-CA": "the Blume account belongs to another patient",
        "fr-CA": "le compte Blume appartient à un autre patient",
    },
    "consent_directive": {
        "en-CA": "the patient's consent directive does not allow it",
        "fr-CA": "la directive de consentement du patient ne le permet pas",
    },
    "smtp_rejected": {
        "en-CA": "the recipient's mail server refused the email",
        "fr-CA": "le serveur de messagerie du destinataire a refusé le courriel",
    },
    "smtp_unavailable": {
        "en-CA": "the email could not be delivered",
        "fr-CA": "le courriel n'a pas pu être livré",
    },
    "template_error": {
        "en-CA": "the email could not be prepared",
        "fr-CA": "le courriel n'a pas pu être préparé",
    },
}
_OTHER: Final[dict[Locale, str]] = {
    "en-CA": "it could not go ahead",
    "fr-CA": "il n'a pas pu aller de l'avant",
}


def reason_in_words(reason: str | None, locale: Locale) -> str:
    """The reason code as a clause of a sentence, in the locale; a neutral one if unknown."""
    return _REASONS.get(reason or "", _OTHER)[locale]


def build_sender_notice_email(
    notice: SenderNotificationRequested,
    *,
    organisation: str,
    **stamp: Unpack[Stamp],
) -> Message:
    """The sender's email for ``notice.occasion``, in the request's locale, with no link."""
    sender_name = display_name(notice.sender_name or "")
    context = {
        "lang": notice.locale,
        "occasion": notice.occasion,
        "share_ref": notice.share_id,
        "sender_name": sender_name,
        "recipient_hint": notice.recipient_hint,
        "reason": reason_in_words(notice.reason, notice.locale),
        "organisation": display_name(organisation),
    }
    return compose(
        render("sender_notice", notice.locale, context),
        to=Mailbox(sender_name, notice.sender_email),
        locale=notice.locale,
        link=None,
        **stamp,
    )
