"""The one wall clock of the shell: aware UTC datetimes.

The pure core never calls it; the service, the sources and the ledger do, and tests
replace it where time matters.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
