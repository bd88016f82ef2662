"""``gateway`` as a process whose wall clock is shifted: for tests that cross a period boundary.

``python -m tests.integration.shifted_gateway FAKE REAL ARGS…`` runs ``gateway ARGS…`` with
``gateway.clock.utcnow`` returning ``FAKE`` (an ISO time) at the real instant ``REAL`` (seconds
since the epoch) and running on from there at the real rate, so a process restarted with the
same two values continues the same shifted time. The patch is made before any gateway module
is imported, so every one of them takes the shifted clock; the database keeps its own.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import gateway.clock as clock


def main() -> None:
    fake, real = datetime.fromisoformat(sys.argv[1]), datetime.fromtimestamp(float(sys.argv[2]), UTC)
    offset, now = fake - real, clock.utcnow
    clock.utcnow = lambda: now() + offset
    from gateway.cli import app  # after the patch

    sys.argv = ["gateway", *sys.argv[3:]]
    app()


if __name__ == "__main__":
    main()
