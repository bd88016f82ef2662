"""The CLI's stock postings while `gateway run` backflushes from the same stock, on the same ledger.

A person receives, issues and counts steel coil at the press's line-side location while the
press is counting and every confirmation issues steel coil from that location. Nothing may
wait forever, fail or be lost: every command succeeds, its movement is in the ledger once,
every unit the simulator made is confirmed once, and stock equals its movements.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from gateway.ledger import schema
from tests.faults.harness import FaultLine
from tests.integration.lines import ROOT

pytestmark = pytest.mark.slow

ORDER = "1000123"  # PRESS-01's order; its BOM issues STEEL-COIL at operation 0010 from LS-PRESS


def cli(line: FaultLine, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--db", line.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def movements(line: FaultLine, kind: str) -> int:
    m = schema.goods_movements.c
    with line.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.goods_movements).where(
            m.material == "STEEL-COIL", m.kind == kind)).scalar_one()


def test_stock_postings_from_the_cli_while_the_gateway_backflushes_the_same_stock(ledger_url, tmp_path):
    line = FaultLine(ledger_url, tmp_path, scenario="CLI stock postings while the gateway backflushes")
    with line:
        line.sims.command("resume")
        receipts_before = movements(line, "501")
        for round_ in range(4):
            for args in (("stock", "receive", "STEEL-COIL", "12.5", "-l", "LS-PRESS"),
                         ("stock", "issue", "STEEL-COIL", "0.75", "--order", ORDER, "-l", "LS-PRESS"),
                         ("stock", "count", "STEEL-COIL", str(Decimal(4000) + round_), "-l", "LS-PRESS")):
                done = cli(line, *args)
                assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
                assert "Traceback" not in done.stderr
        line.finish()  # every unit confirmed once; stock = opening + receipts − issues ± counts
    assert movements(line, "501") - receipts_before == 4
