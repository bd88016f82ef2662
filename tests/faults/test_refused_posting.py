"""Faults in the posting itself: a refused posting, `errors reprocess` racing the writer, writer death.

The gateway process runs with a fault put into it from outside (``python -c`` with a patch,
then the real CLI): the production code is unchanged. Each scenario ends with the suite's
reconciliation against the simulators' ground truth (0 lost, 0 counted twice) and, for the
order whose postings were refused, with its ledger equal to what one confirmation of
everything would have posted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from gateway.domain.backflush import plan
from gateway.domain.records import Confirmation, OperationProgress, StockView
from gateway.ledger import schema
from gateway.ledger.masters import read_materials, read_order, read_work_centers
from gateway.ledger.orders import carry_of, progress_of
from tests.faults.harness import FaultLine
from tests.integration.lines import ROOT, wait_for

pytestmark = pytest.mark.slow

ORDER = "1000123"  # PRESS-01's order

# Planning of one order fails while a flag file exists (a bug in planning; "the fix" deletes it).
REFUSE_PLANNING = """
import os, sys
import gateway.ledger.posting as posting
_plan = posting.plan

def plan(c, *args, **kwargs):
    if c.order == os.environ["FAULT_ORDER"] and os.path.exists(os.environ["FAULT_FLAG"]):
        raise ValueError("injected: a bug in planning this order")
    return _plan(c, *args, **kwargs)

posting.plan = plan
sys.argv = ["gateway", *sys.argv[1:]]
from gateway.cli import app
app()
"""

# The writer thread ends (SystemExit, which nothing catches) once a flag file exists.
KILL_THE_WRITER = """
import os, sys
import gateway.ledger.writer as w
_drain = w.LedgerWriter._drain

def drain(self, **how):
    if os.path.exists(os.environ["FAULT_FLAG"]):
        raise SystemExit("injected: the ledger writer thread ends")
    return _drain(self, **how)

w.LedgerWriter._drain = drain
sys.argv = ["gateway", *sys.argv[1:]]
from gateway.cli import app
app()
"""


def with_fault(line: FaultLine, code: str) -> None:
    assert line.gateway_args[:2] == ["-m", "gateway.cli"]
    line.gateway_args = ["-c", code, *line.gateway_args[2:]]


def open_not_posted(line: FaultLine) -> int:
    eq = schema.error_queue.c
    with line.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.error_queue).where(
            eq.order_no == ORDER, eq.status == "open", eq.reason.like("not posted:%"))).scalar_one()


def reprocess(line: FaultLine) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "errors", "reprocess", "--db", line.url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def order_is_one_confirmation_of_everything(line: FaultLine) -> None:
    """Progress = what was confirmed; what was planned = the plan of the total (rounding carried)."""
    with line.engine.connect() as conn:
        rows = conn.execute(select(schema.confirmations).where(schema.confirmations.c.order_no == ORDER)).all()
        yield_qty = sum((r.yield_qty for r in rows), Decimal(0))
        scrap_qty = sum((r.scrap_qty for r in rows), Decimal(0))
        assert progress_of(conn, ORDER) == {"0010": (yield_qty, scrap_qty)}
        order = read_order(conn, ORDER)
        whole = Confirmation("whole", "", ORDER, "0010", yield_qty, scrap_qty, "PC", (), (), rows[0].posted_at,
                             rows[0].posted_at, "check")
        expected = plan(whole, order, OperationProgress(ORDER, "0010"), read_materials(conn),
                        read_work_centers(conn), StockView(), carry={}).planned
        assert {k: v for k, v in carry_of(conn, ORDER).items() if v} == {k: v for k, v in expected if v}


def test_a_refused_posting_waits_in_the_error_queue_and_reprocess_races_the_writer(ledger_url, tmp_path,
                                                                                   monkeypatch):
    flag = tmp_path / "planning-is-broken"
    flag.touch()
    monkeypatch.setenv("FAULT_ORDER", ORDER)
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    line = FaultLine(ledger_url, tmp_path, scenario="refused posting, reprocess racing the writer")
    with_fault(line, REFUSE_PLANNING)
    with line:
        line.sims.command("resume")
        wait_for(lambda: open_not_posted(line) >= 3, 60, "refused confirmations in the error queue")
        line.faults += 1
        flag.unlink()  # the cause is fixed: the running gateway posts the order again ...
        rounds = 0
        while open_not_posted(line) and rounds < 20:  # ... while the error queue is reprocessed beside it
            done = reprocess(line)
            assert done.returncode == 0, done.stderr
            rounds += 1
        assert open_not_posted(line) == 0, f"still open after {rounds} reprocess runs"
        time.sleep(1.0)
        line.finish()
    order_is_one_confirmation_of_everything(line)
    report = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "--db", line.url], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr


def test_writer_death_stops_the_gateway_failing_and_a_restart_loses_nothing(ledger_url, tmp_path, monkeypatch):
    flag = tmp_path / "writer-dies"
    monkeypatch.setenv("FAULT_FLAG", str(flag))
    line = FaultLine(ledger_url, tmp_path, scenario="writer thread dies")
    with_fault(line, KILL_THE_WRITER)
    with line:
        line.sims.command("resume")
        time.sleep(2.0)
        flag.touch()
        began = time.monotonic()
        code = line.gateway.wait(30)
        took = time.monotonic() - began
        assert code == 1, f"the gateway exited with {code} after its writer died"
        assert took < 10, f"the gateway took {took:.1f} s to stop after its writer died"
        line.faults += 1
        os.unlink(flag)
        line.start_gateway()  # the service manager restarts it
        time.sleep(2.0)
        line.finish()
    assert '"event": "ledger_writer_dead"' in line.log_text()
