"""Page text in English and French (Canada), and dates as people there write them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blume_contracts.locales import DEFAULT_LOCALE, Locale, month_name, narrow_locale
from starlette.requests import HTTPConnection

_EN: Final[dict[str, str]] = {
    "brand": "Blume Share",
    "help": "Help",
    "footer": "Blume Share: secure sharing of imaging studies.",
    "link.title": "An imaging study was shared with you",
    "link.shared_by": "{sender} at {organisation} shared an imaging study with you.",
    "link.expires": "This link works until {when}.",
    "link.auth.none": "Press View study to open it in the viewer.",
    "link.auth.email_otp": (
        "To protect the patient's privacy, we will email a 6-digit code to the address "
        "this link was sent to."
    ),
    "link.auth.sso": "{organisation} asks you to sign in before you see the study.",
    "link.button": "View study",
    "link.not_expected": (
        "Not expecting this? You can close this page: nothing happens until you press the button."
    ),
    "code.title": "Enter your sign-in code",
    "code.sent": (
        "We emailed a 6-digit code to the address this link was sent to. "
        "It works for 10 minutes, on this page only."
    ),
    "code.label": "Sign-in code",
    "code.button": "Continue",
    "code.resend": "Send a new code",
    "code.resend_hint": (
        "Did not get it? Check your junk folder, or send a new one: only the newest code works."
    ),
    "code.wrong_code": "That code is not right. Tries left: {tries}.",
    "code.locked": "Too many wrong codes: this code no longer works. Send yourself a new code.",
    "code.code_expired": (
        "This code has expired or was replaced by a newer one. Send yourself a new code."
    ),
    "expired.title": "This link has expired",
    "expired.body": "It stopped working on {when}.",
    "revoked.title": "This link is no longer available",
    "revoked.body": "The sender withdrew it.",
    "max_uses.title": "This link has been used up",
    "max_uses.body": "It can be opened {uses} times, and it has been.",
    "ask_sender": "To see the study, ask {sender} at {organisation} to share it again.",
    "unknown.title": "This link does not work",
    "unknown.body": (
        "Check that you opened the whole link from the email. If it still does not work, "
        "ask the person who sent it to share the study again."
    ),
    "rate_limited.title": "Too many attempts",
    "rate_limited.body": (
        "To keep shared studies safe, this page is paused. Try again in {seconds} seconds."
    ),
    "csrf.title": "This page has expired",
    "csrf.body": "Go back to the link and press the button once more.",
    "csrf.action": "Back to the link",
    "code_attempts_exhausted.title": "This link is locked",
    "code_attempts_exhausted.body": (
        "Too many wrong codes were entered for this link, so it no longer works. "
        "Ask {sender} at {organisation} to share the study again."
    ),
    "sso_mismatch.title": "You signed in with another account",
    "sso_mismatch.body": (
        "This study was shared with someone else. Sign in with the account the invitation "
        "was sent to, or ask {sender} at {organisation}."
    ),
    "sso_failed.title": "Sign-in did not complete",
    "sso_failed.body": "Try again. If it keeps failing, contact {organisation}.",
    "sso_failed.again": "Open the link from your email and sign in again.",
    "sso.retry": "Sign in again",
    "unavailable.title": "This link cannot be opened right now",
    "unavailable.body": "Try again later, or ask {sender} at {organisation}.",
    "try_again.title": "Please try again shortly",
    "try_again.body": (
        "We are catching up on the latest changes to shared studies. Try again in a few seconds."
    ),
    "error.title": "Something went wrong",
    "error.body": "Nothing was changed. Try again in a few minutes.",
    "not_found.title": "Page not found",
    "not_found.body": "There is nothing at this address.",
    "bad_request.title": "That did not work",
    "bad_request.body": "The form was incomplete. Go back and try again.",
    "blume.title": "Your imaging study",
    "blume.from": "Shared by {organisation}",
    "blume.date": "Study date",
    "blume.modality": "Modality",
    "blume.description": "Description",
    "blume.not_found.title": "Study not found",
    "blume.not_found.body": "It is not in your Blume record, or it is no longer shared.",
    "blume.home.title": "You are signed in to Blume",
    "blume.home.body": "Open a study from the email you received.",
    "blume.sign_in_unavailable.title": "Sign-in is not available",
    "blume.sign_in_unavailable.body": (
        "Blume sign-in is not set up on this server. Contact your care provider."
    ),
    "blume.sign_in_failed.title": "Sign-in did not complete",
    "blume.sign_in_failed.body": "Open the study from your email to try again.",
    "viewer.title": "Study viewer",
    "viewer.ok": "The viewer accepted this ticket. The study would open here.",
    "viewer.bad": "This viewer ticket is not valid, has expired or was already used.",
    "viewer.study_title": "Imaging study",
    "viewer.from": "Shared by {organisation}.",
    "viewer.series": "Series",
    "viewer.images": "{count} images",
    "viewer.no_description": "Series",
    "viewer.image_alt": "Image of the selected series",
    "viewer.previous": "Previous",
    "viewer.next": "Next",
    "viewer.keys": "Use the arrow keys or the mouse wheel to move through the images.",
    "viewer.window": "Window",
    "viewer.preset.soft_tissue": "Soft tissue",
    "viewer.preset.lung": "Lung",
    "viewer.preset.bone": "Bone",
    "viewer.download": "Download the DICOM files (ZIP)",
    "viewer.summary.study_date": "Date",
    "viewer.summary.modalities": "Modality",
    "viewer.summary.description": "Description",
    "viewer.summary.patient_name": "Patient",
    "viewer.gone.title": "This study is no longer available",
    "viewer.gone.body": "The share has ended or was withdrawn. Ask the sender for a new one.",
    "viewer.not_on_pacs.title": "The images are not available",
    "viewer.not_on_pacs.body": (
        "This study is not (or no longer) on the imaging system. Contact the organisation that "
        "shared it."
    ),
    "help.title": "Help",
    "help.index": "All help topics",
}

_FR: Final[dict[str, str]] = {
    "brand": "Blume Share",
    "help": "Aide",
    "footer": "Blume Share : partage sécurisé d'examens d'imagerie.",
    "link.title": "Un examen d'imagerie a été partagé avec vous",
    "link.shared_by": "{sender}, de {organisation}, a partagé un examen d'imagerie avec vous.",
    "link.expires": "Ce lien fonctionne jusqu'au {when}.",
    "link.auth.none": "Appuyez sur Voir l'examen pour l'ouvrir dans la visionneuse.",
    "link.auth.email_otp": (
        "Pour protéger la vie privée du patient, nous enverrons un code à 6 chiffres à "
        "l'adresse à laquelle ce lien a été envoyé."
    ),
    "link.auth.sso": "{organisation} vous demande de vous connecter avant de voir l'examen.",
    "link.button": "Voir l'examen",
    "link.not_expected": (
        "Vous n'attendiez pas ce message? Vous pouvez fermer cette page : rien ne se passe "
        "tant que vous n'appuyez pas sur le bouton."
    ),
    "code.title": "Entrez votre code de connexion",
    "code.sent": (
        "Nous avons envoyé un code à 6 chiffres à l'adresse à laquelle ce lien a été envoyé. "
        "Il est valide 10 minutes, sur cette page seulement."
    ),
    "code.label": "Code de connexion",
    "code.button": "Continuer",
    "code.resend": "Envoyer un nouveau code",
    "code.resend_hint": (
        "Vous ne l'avez pas reçu? Vérifiez vos courriels indésirables, ou demandez-en un "
        "nouveau : seul le code le plus récent fonctionne."
    ),
    "code.wrong_code": "Ce code n'est pas le bon. Essais restants : {tries}.",
    "code.locked": "Trop de codes erronés : ce code ne fonctionne plus. Demandez un nouveau code.",
    "code.code_expired": (
        "Ce code a expiré ou a été remplacé par un code plus récent. Demandez un nouveau code."
    ),
    "expired.title": "Ce lien a expiré",
    "expired.body": "Il a cessé de fonctionner le {when}.",
    "revoked.title": "Ce lien n'est plus disponible",
    "revoked.body": "L'expéditeur l'a retiré.",
    "max_uses.title": "Ce lien a atteint sa limite",
    "max_uses.body": "Il peut être ouvert {uses} fois, et il l'a été.",
    "ask_sender": (
        "Pour voir l'examen, demandez à {sender}, de {organisation}, de le partager de nouveau."
    ),
    "unknown.title": "Ce lien ne fonctionne pas",
    "unknown.body": (
        "Vérifiez que vous avez ouvert le lien complet du courriel. S'il ne fonctionne "
        "toujours pas, demandez à la personne qui l'a envoyé de partager l'examen de nouveau."
    ),
    "rate_limited.title": "Trop de tentatives",
    "rate_limited.body": (
        "Pour protéger les examens partagés, cette page est en pause. "
        "Réessayez dans {seconds} secondes."
    ),
    "csrf.title": "Cette page a expiré",
    "csrf.body": "Retournez au lien et appuyez de nouveau sur le bouton.",
    "csrf.action": "Retour au lien",
    "code_attempts_exhausted.title": "Ce lien est verrouillé",
    "code_attempts_exhausted.body": (
        "Trop de codes erronés ont été saisis pour ce lien : il ne fonctionne plus. "
        "Demandez à {sender}, de {organisation}, de partager l'examen de nouveau."
    ),
    "sso_mismatch.title": "Vous vous êtes connecté avec un autre compte",
    "sso_mismatch.body": (
        "Cet examen a été partagé avec une autre personne. Connectez-vous avec le compte "
        "auquel l'invitation a été envoyée, ou adressez-vous à {sender}, de {organisation}."
    ),
    "sso_failed.title": "La connexion n'a pas abouti",
    "sso_failed.body": "Réessayez. Si le problème persiste, communiquez avec {organisation}.",
    "sso_failed.again": "Ouvrez le lien de votre courriel et connectez-vous de nouveau.",
    "sso.retry": "Se connecter de nouveau",
    "unavailable.title": "Ce lien ne peut pas être ouvert pour le moment",
    "unavailable.body": "Réessayez plus tard, ou adressez-vous à {sender}, de {organisation}.",
    "try_again.title": "Veuillez réessayer dans un instant",
    "try_again.body": (
        "Nous prenons en compte les derniers changements apportés aux examens partagés. "
        "Réessayez dans quelques secondes."
    ),
    "error.title": "Une erreur s'est produite",
    "error.body": "Rien n'a été modifié. Réessayez dans quelques minutes.",
    "not_found.title": "Page introuvable",
    "not_found.body": "Il n'y a rien à cette adresse.",
    "bad_request.title": "Cela n'a pas fonctionné",
    "bad_request.body": "Le formulaire était incomplet. Revenez en arrière et réessayez.",
    "blume.title": "Votre examen d'imagerie",
    "blume.from": "Partagé par {organisation}",
    "blume.date": "Date de l'examen",
    "blume.modality": "Modalité",
    "blume.description": "Description",
    "blume.not_found.title": "Examen introuvable",
    "blume.not_found.body": "Il ne figure pas à votre dossier Blume, ou il n'est plus partagé.",
    "blume.home.title": "Vous êtes connecté à Blume",
    "blume.home.body": "Ouvrez un examen à partir du courriel que vous avez reçu.",
    "blume.sign_in_unavailable.title": "La connexion n'est pas offerte",
    "blume.sign_in_unavailable.body": (
        "La connexion à Blume n'est pas configurée sur ce serveur. "
        "Communiquez avec votre fournisseur de soins."
    ),
    "blume.sign_in_failed.title": "La connexion n'a pas abouti",
    "blume.sign_in_failed.body": "Ouvrez l'examen à partir de votre courriel pour réessayer.",
    "viewer.title": "Visionneuse",
    "viewer.ok": "La visionneuse a accepté ce billet. L'examen s'ouvrirait ici.",
    "viewer.bad": "Ce billet n'est pas valide, a expiré ou a déjà été utilisé.",
    "viewer.study_title": "Examen d'imagerie",
    "viewer.from": "Partagé par {organisation}.",
    "viewer.series": "Séries",
    "viewer.images": "{count} images",
    "viewer.no_description": "Série",
    "viewer.image_alt": "Image de la série choisie",
    "viewer.previous": "Précédente",
    "viewer.next": "Suivante",
    "viewer.keys": "Utilisez les flèches du clavier ou la molette pour parcourir les images.",
    "viewer.window": "Fenêtre",
    "viewer.preset.soft_tissue": "Tissus mous",
    "viewer.preset.lung": "Poumon",
    "viewer.preset.bone": "Os",
    "viewer.download": "Télécharger les fichiers DICOM (ZIP)",
    "viewer.summary.study_date": "Date",
    "viewer.summary.modalities": "Modalité",
    "viewer.summary.description": "Description",
    "viewer.summary.patient_name": "Patient",
    "viewer.gone.title": "Cet examen n'est plus disponible",
    "viewer.gone.body": (
        "Le partage a pris fin ou a été retiré. Demandez-en un nouveau à l'expéditeur."
    ),
    "viewer.not_on_pacs.title": "Les images ne sont pas disponibles",
    "viewer.not_on_pacs.body": (
        "Cet examen n'est pas (ou plus) dans le système d'imagerie. Communiquez avec "
        "l'organisation qui l'a partagé."
    ),
    "help.title": "Aide",
    "help.index": "Tous les sujets d'aide",
}

CATALOGUES: Final[dict[Locale, dict[str, str]]] = {"en-CA": _EN, "fr-CA": _FR}

Translate = Callable[..., str]


def from_accept_language(header: str | None) -> str:
    """For pages with no link to take the language from: French if the browser prefers it."""
    first = (header or "").split(",", 1)[0].strip().lower()
    return "fr-CA" if first.startswith("fr") else DEFAULT_LOCALE


def browser_locale(request: HTTPConnection) -> str:
    """``from_accept_language`` of the request's ``Accept-Language`` header."""
    return from_accept_language(request.headers.get("accept-language"))


def translator(locale: str) -> Translate:
    catalogue = CATALOGUES[narrow_locale(locale)]

    def translate(key: str, **values: object) -> str:
        return catalogue[key].format(**values)

    return translate


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def format_when(moment: datetime, locale: str, tz: ZoneInfo) -> str:
    """E.g. "November 30, 2026, 14:05 EST" or "30 novembre 2026, 14 h 05 (EST)", in ``tz``."""
    local = moment.astimezone(tz)
    spoken = narrow_locale(locale)
    month = month_name(spoken, local.month)
    abbreviation = local.strftime("%Z")
    if spoken == "fr-CA":
        return (
            f"{local.day} {month} {local.year}, {local.hour} h {local.minute:02d} ({abbreviation})"
        )
    return f"{month} {local.day}, {local.year}, {local.hour:02d}:{local.minute:02d} {abbreviation}"
