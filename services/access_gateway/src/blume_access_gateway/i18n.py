"""Page text in English and French (Canada), and dates as people there write them.

Over 400 lines on purpose: it is data, the two languages' text side by side, one key per
line; kept as one table, a missing or extra translation shows in one place (the help and
i18n tests compare the two dictionaries key for key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from blume_contracts.locales import DEFAULT_LOCALE, Locale, narrow_locale
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
    "link.message_waiting": (
        "{sender} also left you a message. You will see it here once you have access."
    ),
    "link.message_heading": "Message from {sender}",
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
    "unsubscribe.title": "Stop Blume emails",
    "unsubscribe.body": (
        "Press the button to stop the emails that tell you a new study is in your Blume "
        "record. Your record itself does not change."
    ),
    "unsubscribe.button": "Stop these emails",
    "unsubscribed.title": "You will get no more Blume emails",
    "unsubscribed.body": "New studies still appear in your Blume record.",
    "sign_out.button": "Sign out",
    "signed_out.title": "You are signed out",
    "signed_out.body": (
        "Nothing of your session is left on this server. On a shared computer, close this "
        "window too."
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
    "sender.title": "Share a study",
    "sender.study": "Study",
    "sender.patient": "Patient",
    "sender.birth_date": "Birth date",
    "sender.mrn": "MRN",
    "sender.study_date": "Study date",
    "sender.modalities": "Modalities",
    "sender.description": "Description",
    "sender.from": "Shared by",
    "sender.method": "How to share",
    "sender.method.external_link": "Send to External User",
    "sender.method.external_link.hint": (
        "Emails a secure, time-limited link to a person outside the organisation."
    ),
    "sender.method.blume": "Send to Blume",
    "sender.method.blume.hint": "Publishes the study into the patient's own Blume record.",
    "sender.recipient_name": "Recipient's name",
    "sender.recipient_email": "Recipient's email",
    "sender.message": "Message (optional)",
    "sender.message.warning": (
        "Do not put patient details (name, birth date, MRN) in the message: it travels by email."
    ),
    "sender.expires_in_hours": "Link works for",
    "sender.hours": "{hours} hours",
    "sender.auth.none": "The recipient opens the study straight from the link.",
    "sender.auth.email_otp": (
        "The recipient will be asked for a 6-digit code that we email to them."
    ),
    "sender.auth.sso": "The recipient will be asked to sign in with their organisation.",
    "sender.blume.enrolled": "The patient has a Blume account and can receive this study.",
    "sender.blume.not_enrolled": (
        "The patient has no active Blume account: this study cannot be sent to Blume."
    ),
    "sender.blume.withheld": (
        "The patient's consent directives withhold their Blume record: "
        "this study cannot be sent to Blume."
    ),
    "sender.send": "Send",
    "sender.errors": "Please correct the fields marked below.",
    "sender.earlier": "Your earlier shares of this study",
    "sender.earlier.none": "You have not shared this study before.",
    "send.error.method": "Choose how to share the study.",
    "send.error.recipient_name": "Enter the recipient's name.",
    "send.error.recipient_email": "Enter a valid email address, like name@clinic.example.",
    "send.error.message": "The message is too long: at most 2000 characters.",
    "send.error.expires_in_hours": "Choose how long the link works.",
    "send.error.expiry_over_cap": (
        "Choose a shorter time: your organisation allows at most {max} hours."
    ),
    "send.error.blume_not_enrolled": "The patient has no active Blume account.",
    "send.error.blume_withheld": "The patient's consent directives withhold their Blume record.",
    "send.error.form": "The study could not be checked. Go back to OmegaAI and try again.",
    "status.title": "Share status",
    "status.live": "This page updates by itself.",
    "status.step.requested": "Sent for processing",
    "status.step.accepted": "Accepted",
    "status.step.link_issued": "Secure link issued",
    "status.step.email_sent": "Email sent",
    "status.step.published": "Published to the patient's Blume record",
    "status.step.opened": "Opened {count} time(s): first {first}, last {last}",
    "status.step.not_opened": "Not opened yet",
    "status.step.accessed": "Access granted {count} time(s), last {last}",
    "status.step.not_accessed": "Not accessed yet",
    "status.step.viewed": "Viewed by the patient {count} time(s), last {last}",
    "status.step.not_viewed": "Not viewed by the patient yet",
    "status.step.rejected": "Rejected: {reason}",
    "status.step.failed": "Failed: {reason}",
    "status.step.revoked": "Revoked on {when}",
    "status.revoke": "Revoke",
    "status.revoke.hint": "Revoking stops the link working at once.",
    "status.revoke.title": "Revoke this share?",
    "status.revoke.body": (
        "The recipient will no longer be able to open the study. This cannot be undone."
    ),
    "status.revoke.confirm": "Yes, revoke",
    "status.revoke.cancel": "Cancel",
    "status.state.requested": "requested",
    "status.state.accepted": "accepted",
    "status.state.link_issued": "link issued",
    "status.state.sent": "email sent",
    "status.state.completed": "sent",
    "status.state.failed": "failed",
    "status.state.rejected": "rejected",
    "status.state.revoked": "revoked",
    "status.method.external_link": "External user",
    "status.method.blume": "Blume",
    "reason.invalid_recipient_email": "the recipient's email address is not valid",
    "reason.expiry_exceeds_policy": "the expiry is longer than the organisation allows",
    "reason.patient_not_enrolled": "the patient has no active Blume account",
    "reason.patient_mismatch": "the Blume account belongs to another patient",
    "reason.consent_directive": "the patient's consent directives do not allow it",
    "reason.smtp_rejected": "the recipient's mail server refused the email",
    "reason.smtp_unavailable": "the email could not be delivered",
    "reason.other": "the share could not be completed ({code})",
    "launch.unknown.title": "This sharing link does not work",
    "launch.unknown.body": (
        "Go back to OmegaAI, open the study and choose Send, then Send Study again."
    ),
    "launch.used.title": "This sharing link was already used",
    "launch.used.body": (
        "Each sharing link opens once. Go back to OmegaAI and choose Send, then Send Study "
        "again to open a new sharing page."
    ),
    "launch.expired.title": "This sharing link has expired",
    "launch.expired.body": (
        "Sharing links work for 5 minutes. Go back to OmegaAI and choose Send, then Send "
        "Study again."
    ),
    "sender_session.title": "Your sharing session has ended",
    "sender_session.body": (
        "Go back to OmegaAI and choose Send, then Send Study again to share this study."
    ),
    "sender_mismatch.title": "You signed in as someone else",
    "sender_mismatch.body": (
        "This sharing page was opened for another user. Sign in as yourself in OmegaAI and "
        "choose Send Study again."
    ),
    "sender_sign_in.title": "Sign-in did not complete",
    "sender_sign_in.body": "Go back to OmegaAI and choose Send Study again.",
    "sender_csrf.title": "This page has expired",
    "sender_csrf.body": "Nothing was sent. Reload the page and send again.",
    "share_not_found.title": "Share not found",
    "share_not_found.body": "It is not one of your shares.",
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
    "link.message_waiting": (
        "{sender} vous a aussi laissé un message. Vous le verrez ici une fois l'accès obtenu."
    ),
    "link.message_heading": "Message de {sender}",
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
    "unsubscribe.title": "Ne plus recevoir les courriels de Blume",
    "unsubscribe.body": (
        "Appuyez sur le bouton pour ne plus recevoir les courriels qui vous avisent qu'un "
        "nouvel examen figure à votre dossier Blume. Votre dossier ne change pas."
    ),
    "unsubscribe.button": "Ne plus recevoir ces courriels",
    "unsubscribed.title": "Vous ne recevrez plus de courriels de Blume",
    "unsubscribed.body": "Les nouveaux examens figurent toujours à votre dossier Blume.",
    "sign_out.button": "Se déconnecter",
    "signed_out.title": "Vous êtes déconnecté",
    "signed_out.body": (
        "Il ne reste rien de votre session sur ce serveur. Sur un ordinateur partagé, "
        "fermez aussi cette fenêtre."
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
    "sender.title": "Partager un examen",
    "sender.study": "Examen",
    "sender.patient": "Patient",
    "sender.birth_date": "Date de naissance",
    "sender.mrn": "NDM",
    "sender.study_date": "Date de l'examen",
    "sender.modalities": "Modalités",
    "sender.description": "Description",
    "sender.from": "Partagé par",
    "sender.method": "Mode de partage",
    "sender.method.external_link": "Envoyer à un utilisateur externe",
    "sender.method.external_link.hint": (
        "Envoie par courriel un lien sécurisé et limité dans le temps à une personne "
        "externe à l'organisation."
    ),
    "sender.method.blume": "Envoyer à Blume",
    "sender.method.blume.hint": "Publie l'examen dans le dossier Blume du patient.",
    "sender.recipient_name": "Nom du destinataire",
    "sender.recipient_email": "Courriel du destinataire",
    "sender.message": "Message (facultatif)",
    "sender.message.warning": (
        "N'inscrivez aucun renseignement sur le patient (nom, date de naissance, NDM) dans "
        "le message : il est transmis par courriel."
    ),
    "sender.expires_in_hours": "Le lien fonctionne pendant",
    "sender.hours": "{hours} heures",
    "sender.auth.none": "Le destinataire ouvre l'examen directement à partir du lien.",
    "sender.auth.email_otp": (
        "Le destinataire devra saisir un code à 6 chiffres que nous lui enverrons par courriel."
    ),
    "sender.auth.sso": "Le destinataire devra se connecter avec son organisation.",
    "sender.blume.enrolled": "Le patient a un compte Blume et peut recevoir cet examen.",
    "sender.blume.not_enrolled": (
        "Le patient n'a pas de compte Blume actif : cet examen ne peut pas être envoyé à Blume."
    ),
    "sender.blume.withheld": (
        "Les directives de consentement du patient excluent son dossier Blume : cet examen "
        "ne peut pas être envoyé à Blume."
    ),
    "sender.send": "Envoyer",
    "sender.errors": "Veuillez corriger les champs indiqués ci-dessous.",
    "sender.earlier": "Vos partages précédents de cet examen",
    "sender.earlier.none": "Vous n'avez jamais partagé cet examen.",
    "send.error.method": "Choisissez le mode de partage.",
    "send.error.recipient_name": "Saisissez le nom du destinataire.",
    "send.error.recipient_email": (
        "Saisissez une adresse courriel valide, comme nom@clinique.exemple."
    ),
    "send.error.message": "Le message est trop long : 2000 caractères au plus.",
    "send.error.expires_in_hours": "Choisissez la durée de validité du lien.",
    "send.error.expiry_over_cap": (
        "Choisissez une durée plus courte : votre organisation permet au plus {max} heures."
    ),
    "send.error.blume_not_enrolled": "Le patient n'a pas de compte Blume actif.",
    "send.error.blume_withheld": (
        "Les directives de consentement du patient excluent son dossier Blume."
    ),
    "send.error.form": "L'examen n'a pas pu être vérifié. Revenez à OmegaAI et réessayez.",
    "status.title": "État du partage",
    "status.live": "Cette page se met à jour d'elle-même.",
    "status.step.requested": "Transmis pour traitement",
    "status.step.accepted": "Accepté",
    "status.step.link_issued": "Lien sécurisé créé",
    "status.step.email_sent": "Courriel envoyé",
    "status.step.published": "Publié dans le dossier Blume du patient",
    "status.step.opened": "Ouvert {count} fois : la première le {first}, la dernière le {last}",
    "status.step.not_opened": "Pas encore ouvert",
    "status.step.accessed": "Accès accordé {count} fois, la dernière le {last}",
    "status.step.not_accessed": "Pas encore consulté",
    "status.step.viewed": "Consulté par le patient {count} fois, la dernière le {last}",
    "status.step.not_viewed": "Pas encore consulté par le patient",
    "status.step.rejected": "Refusé : {reason}",
    "status.step.failed": "Échec : {reason}",
    "status.step.revoked": "Révoqué le {when}",
    "status.revoke": "Révoquer",
    "status.revoke.hint": "La révocation désactive le lien immédiatement.",
    "status.revoke.title": "Révoquer ce partage?",
    "status.revoke.body": (
        "Le destinataire ne pourra plus ouvrir l'examen. Cette action est irréversible."
    ),
    "status.revoke.confirm": "Oui, révoquer",
    "status.revoke.cancel": "Annuler",
    "status.state.requested": "demandé",
    "status.state.accepted": "accepté",
    "status.state.link_issued": "lien créé",
    "status.state.sent": "courriel envoyé",
    "status.state.completed": "envoyé",
    "status.state.failed": "échec",
    "status.state.rejected": "refusé",
    "status.state.revoked": "révoqué",
    "status.method.external_link": "Utilisateur externe",
    "status.method.blume": "Blume",
    "reason.invalid_recipient_email": "l'adresse courriel du destinataire n'est pas valide",
    "reason.expiry_exceeds_policy": "la durée dépasse ce que permet l'organisation",
    "reason.patient_not_enrolled": "le patient n'a pas de compte Blume actif",
    "reason.patient_mismatch": "le compte Blume appartient à un autre patient",
    "reason.consent_directive": "les directives de consentement du patient ne le permettent pas",
    "reason.smtp_rejected": "le serveur de courriel du destinataire a refusé le message",
    "reason.smtp_unavailable": "le courriel n'a pas pu être livré",
    "reason.other": "le partage n'a pas pu être complété ({code})",
    "launch.unknown.title": "Ce lien de partage ne fonctionne pas",
    "launch.unknown.body": (
        "Revenez à OmegaAI, ouvrez l'examen et choisissez Envoyer, puis Envoyer l'examen."
    ),
    "launch.used.title": "Ce lien de partage a déjà été utilisé",
    "launch.used.body": (
        "Chaque lien de partage s'ouvre une seule fois. Revenez à OmegaAI et choisissez "
        "Envoyer, puis Envoyer l'examen pour ouvrir une nouvelle page de partage."
    ),
    "launch.expired.title": "Ce lien de partage a expiré",
    "launch.expired.body": (
        "Les liens de partage fonctionnent 5 minutes. Revenez à OmegaAI et choisissez "
        "Envoyer, puis Envoyer l'examen."
    ),
    "sender_session.title": "Votre session de partage est terminée",
    "sender_session.body": (
        "Revenez à OmegaAI et choisissez Envoyer, puis Envoyer l'examen pour partager cet examen."
    ),
    "sender_mismatch.title": "Vous vous êtes connecté sous un autre nom",
    "sender_mismatch.body": (
        "Cette page de partage a été ouverte pour un autre utilisateur. Connectez-vous à "
        "OmegaAI sous votre nom et choisissez de nouveau Envoyer l'examen."
    ),
    "sender_sign_in.title": "La connexion n'a pas abouti",
    "sender_sign_in.body": "Revenez à OmegaAI et choisissez de nouveau Envoyer l'examen.",
    "sender_csrf.title": "Cette page a expiré",
    "sender_csrf.body": "Rien n'a été envoyé. Rechargez la page et envoyez de nouveau.",
    "share_not_found.title": "Partage introuvable",
    "share_not_found.body": "Ce n'est pas l'un de vos partages.",
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
