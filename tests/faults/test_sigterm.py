"""Fault 8: SIGTERM while the machines count: pending units are confirmed before exit.

ASSY-03 confirms only every 100 000 units or hour, so its units sit pending; a SIGTERM
must confirm them (trigger ``shutdown``) and commit within the shutdown timeout, exit 0,
and the restarted gateway must continue from there without counting anything twice.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow
SHUTDOWN_TIMEOUT_S = 30  # the gateway's default --shutdown-timeout


def test_sigterm_confirms_pending_units(ledger_url, tmp_path, soak_round):
    with FaultLine(ledger_url, tmp_path, scenario="SIGTERM", assy_every=100_000, assy_seconds=3600) as line:
        line.sims.command("resume")
        time.sleep(2.5)
        with line.engine.connect() as conn:
            pending = conn.execute(select(schema.pending_units).where(schema.pending_units.c.machine == "ASSY-03")).all()
        assert pending and sum(p.yield_qty + p.scrap_qty for p in pending) > 0
        code, took = line.stop_gateway(SHUTDOWN_TIMEOUT_S + 10)  # while the machines keep counting
        line.faults += 1
        assert code == 0 and took < SHUTDOWN_TIMEOUT_S
        with line.engine.connect() as conn:
            left = conn.execute(select(schema.pending_units)).all()
            shutdown = conn.execute(select(schema.confirmations).where(schema.confirmations.c.trigger == "shutdown")).all()
        assert left == [] and any(c.machine == "ASSY-03" for c in shutdown)
        time.sleep(1.0)
        line.start_gateway()
        time.sleep(2.0)
        figures = line.finish()
    assert figures.lost == 0
