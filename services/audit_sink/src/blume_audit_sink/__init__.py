"""blume_audit_sink: the hash-chained audit store and the worker that feeds it.

What other packages may call is exported here; the modules behind it are the sink's own.
The composition root (the CLI) uses the worker, and the operator's verbs: query, verify,
export, disclosures, checkpoints and signing keys, retention and legal holds, the read API.
"""

from typing import Final

from blume_audit_sink.api import TokenConfigError, create_app, hash_token, new_token, token_hashes
from blume_audit_sink.checkpoints import SignedCheckpoint, checkpoint_chains
from blume_audit_sink.disclosures import (
    DisclosureReport,
    DisclosureRequest,
    accounting,
    spreadsheet_safe,
)
from blume_audit_sink.disclosures import as_csv as disclosures_as_csv
from blume_audit_sink.disclosures import as_html as disclosures_as_html
from blume_audit_sink.disclosures import as_json as disclosures_as_json
from blume_audit_sink.export import CSV_COLUMNS, csv_text, fhir_bundle, fhir_json, jsonl_line
from blume_audit_sink.export import records_matching as records_to_export
from blume_audit_sink.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditLegalHold,
    AuditPending,
    AuditPurge,
    AuditRecord,
    AuditRetention,
    AuditStagingRole,
)
from blume_audit_sink.operator_reads import (
    AUDIT_LOG_READ_TYPE,
    RECORDS_READ_TYPE,
    record_operator_read,
)
from blume_audit_sink.retention import (
    PurgePlan,
    PurgeRefusedError,
    active_holds,
    place_hold,
    plan_purge,
    purge,
    release_hold,
    retention_days,
    set_retention,
)
from blume_audit_sink.retention import operator as current_operator
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.search import RecordFilter, find, record_as_json, share_seen
from blume_audit_sink.service import NAME, build
from blume_audit_sink.settings import AuditSettings, checkpoint_dir
from blume_audit_sink.signing_keys import (
    SigningKeyError,
    key_id,
    new_private_key_text,
    private_key_from_text,
    public_key_text,
    signing_key,
)
from blume_audit_sink.verify import VerifyReport, verify_store
from blume_audit_sink.verify import verify as verify_chains

TABLES: Final = (
    AuditRecord,
    AuditChainHead,
    AuditPending,
    AuditStagingRole,
    AuditCheckpoint,
    AuditPurge,
    AuditRetention,
    AuditLegalHold,
)
"""The audit store (records and chain heads), its staging and who may stage, checkpoints,
purges, retention and legal holds: this service's tables, in its schema (``NAME``)."""

__all__ = [
    "AUDIT_LOG_READ_TYPE",
    "CSV_COLUMNS",
    "NAME",
    "RECORDS_READ_TYPE",
    "TABLES",
    "AuditLegalHold",
    "AuditRecord",
    "AuditSettings",
    "DisclosureReport",
    "DisclosureRequest",
    "PurgePlan",
    "PurgeRefusedError",
    "RecordFilter",
    "SignedCheckpoint",
    "SigningKeyError",
    "TokenConfigError",
    "VerifyReport",
    "accounting",
    "active_holds",
    "build",
    "checkpoint_chains",
    "checkpoint_dir",
    "create_app",
    "csv_text",
    "current_operator",
    "disclosures_as_csv",
    "disclosures_as_html",
    "disclosures_as_json",
    "fhir_bundle",
    "fhir_json",
    "find",
    "hash_token",
    "jsonl_line",
    "key_id",
    "new_private_key_text",
    "new_token",
    "place_hold",
    "plan_purge",
    "private_key_from_text",
    "public_key_text",
    "purge",
    "record_as_json",
    "record_operator_read",
    "records_to_export",
    "release_hold",
    "retention_days",
    "seal_all",
    "set_retention",
    "share_seen",
    "signing_key",
    "spreadsheet_safe",
    "token_hashes",
    "verify_chains",
    "verify_store",
]
