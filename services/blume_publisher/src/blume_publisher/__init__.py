"""blume_publisher: the Blume patient record store and its accounts.

The public API, for the composition root (the CLI): the worker (``NAME``, ``build``) and the
account import and description that ``blume-share patients`` offers.
"""

from typing import Final

from blume_publisher.accounts import (
    AccountRecord,
    ImportFileError,
    ImportResult,
    describe_account,
    import_accounts,
    parse_accounts,
)
from blume_publisher.models import PatientAccount, RecordEntry
from blume_publisher.service import NAME, build

TABLES: Final = (PatientAccount, RecordEntry)
"""The accounts and their record entries: this service's tables, in its schema (``NAME``)."""

__all__ = [
    "NAME",
    "TABLES",
    "AccountRecord",
    "ImportFileError",
    "ImportResult",
    "build",
    "describe_account",
    "import_accounts",
    "parse_accounts",
]
