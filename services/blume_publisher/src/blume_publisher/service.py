"""blume_publisher: publishes a study into the patient's Blume record, honouring privacy."""

from __future__ import annotations

from blume_contracts.consent import portal_verdict
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    PatientNotificationsUnsubscribed,
    ShareBlumePublished,
    ShareBlumeRequested,
    ShareBlumeWithheld,
    ShareRevoked,
)
from blume_contracts.locales import narrow_locale
from blume_runtime.app import serve
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.tracing import current_traceparent

from blume_publisher.accounts import apply_unsubscribe
from blume_publisher.imaging import imaging_study, study_summary
from blume_publisher.models import PatientAccount, RecordEntry
from blume_publisher.records import entries_published_by, entry_for_study, new_entry_id

NAME = "blume_publisher"


class Publisher:
    """Adds a study to the patient's record, unless their consent withholds it; hides the
    entries of a revoked share."""

    async def publish(self, event: CloudEvent[ShareBlumeRequested], ctx: HandlerContext) -> None:
        request = event.data
        # Locked, so a consent change committed meanwhile is seen before we publish.
        account = await ctx.session.get(
            PatientAccount, request.blume_patient_id, with_for_update=True
        )
        if account is not None and account.tenant_id != request.tenant_id:
            account = None
        withhold = portal_verdict(account, request.study.patient_mrn)
        if withhold is not None:
            ctx.emit(
                "share.blume.withheld",
                ShareBlumeWithheld(
                    share_id=request.share_id, reason=withhold.reason, message=withhold.message
                ),
            )
            ctx.log.info("publication withheld", reason=withhold.reason)
            return
        assert account is not None  # portal_verdict withholds when there is no account
        entry = await entry_for_study(
            ctx.session, account.blume_patient_id, request.study.study_instance_uid
        )
        newly_published = entry is None
        if entry is None:
            entry = RecordEntry(
                entry_id=new_entry_id(),
                blume_patient_id=account.blume_patient_id,
                tenant_id=account.tenant_id,
                study_instance_uid=request.study.study_instance_uid,
                share_id=request.share_id,
                imaging_study=imaging_study(request.study, account.blume_patient_id),
                traceparent=current_traceparent(),
            )
            ctx.session.add(entry)
        ctx.emit(
            "share.blume.published",
            ShareBlumePublished(
                share_id=request.share_id,
                blume_patient_id=account.blume_patient_id,
                entry_id=entry.entry_id,
                newly_published=newly_published,
                email_notifications=account.email_notifications,
                patient_email=account.email,
                locale=narrow_locale(account.locale),
                study=study_summary(entry.imaging_study),
                study_instance_uid=entry.study_instance_uid,
            ),
        )
        ctx.log.info("study published", entry_id=entry.entry_id, new=newly_published)

    async def unsubscribe(
        self, event: CloudEvent[PatientNotificationsUnsubscribed], ctx: HandlerContext
    ) -> None:
        """The patient's one-click unsubscribe: the account's emails off, announced."""
        data = event.data
        account = await apply_unsubscribe(
            ctx, data.blume_patient_id, data.tenant_id, data.unsubscribed_at
        )
        ctx.log.info("email notifications switched off", applied=account is not None)

    async def hide(self, event: CloudEvent[ShareRevoked], ctx: HandlerContext) -> None:
        # Entries this share published leave the patient's view; the row stays for the record.
        entries = await entries_published_by(ctx.session, event.data.share_id)
        for entry in entries:
            if entry.hidden_at is None:
                entry.hidden_at = event.data.revoked_at
                ctx.session.add(entry)
        if entries:
            ctx.log.info("record entries hidden", count=len(entries))


def build(_settings: Settings) -> Service:
    service = Service(NAME)
    publisher = Publisher()
    service.handles("share.blume.requested")(publisher.publish)
    service.handles("share.revoked")(publisher.hide)
    service.handles("patient.notifications.unsubscribed")(publisher.unsubscribe)
    return service


def main() -> None:
    serve([build])
