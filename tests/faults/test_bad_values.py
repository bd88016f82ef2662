"""Fault 7: bad values from the PLC, and a jump beyond the plausibility limit.

PRESS-01's GoodCount node shows, in turn, a Bad status, an Uncertain status, a Float, a
String and a negative number while the machine keeps counting; the gateway ignores them
(an anomaly for the wrong type and the negative value) and counts on from the next good
value. Then the gateway is down while the press makes more than its plausibility limit:
the jump is held as an ``implausible`` anomaly, not posted. ``gateway anomalies accept``
posts it exactly once; accepting again or rejecting it afterwards is refused.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine, reconcile
from tests.integration.lines import ROOT

pytestmark = pytest.mark.slow
PLAUSIBLE_UNITS = 200  # PRESS-01: 50 counts of 4 units in one reading


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def test_bad_values_and_an_implausible_jump(ledger_url, tmp_path, soak_round):
    with FaultLine(ledger_url, tmp_path, scenario="bad values", press_plausibility=PLAUSIBLE_UNITS) as line:
        line.sims.command("resume")
        time.sleep(1.0)
        for kind in ("bad", "uncertain", "float", "string", "negative"):
            line.sims.command("bad_value", "PRESS-01", kind)
            line.faults += 1
            time.sleep(0.4)  # ~10 cycles: below the plausibility limit when the count shows again
            line.sims.command("bad_value", "PRESS-01", "none")
            time.sleep(0.4)
        line.kill_gateway()
        time.sleep(3.0)  # ~75 cycles = ~300 units > 200 in the first reading after the restart
        line.start_gateway()
        time.sleep(1.5)
        held_figures = line.finish()
        with line.engine.connect() as conn:
            anomalies = conn.execute(select(schema.anomalies).where(schema.anomalies.c.machine == "PRESS-01")).all()
        bad = [a for a in anomalies if a.kind == "bad_value"]
        (jump,) = [a for a in anomalies if a.kind == "implausible"]
        assert len(bad) >= 3, [a.detail for a in bad]  # float, string, negative; Bad/Uncertain are only counted
        assert jump.status == "open" and jump.units_held > PLAUSIBLE_UNITS
        assert held_figures.held == jump.units_held

        db = ["--db", ledger_url]
        listed = cli("anomalies", "list", *db)
        assert listed.returncode == 0 and f"{jump.id:>6}" in listed.stdout, listed.stdout + listed.stderr
        accepted = cli("anomalies", "accept", str(jump.id), "--reason", "counted while the gateway was down", *db)
        assert accepted.returncode == 0, accepted.stderr
        assert "1000123" in accepted.stdout
        again = cli("anomalies", "accept", str(jump.id), *db)
        assert again.returncode == 1 and "already accepted" in again.stderr and "Traceback" not in again.stderr
        reject = cli("anomalies", "reject", str(jump.id), *db)
        assert reject.returncode == 1 and "already accepted" in reject.stderr
        line.scenario = "bad values, jump accepted"
        after = reconcile(line, line.sims.truth(), {}, min_units=50)
    assert after.held == 0 and after.confirmed == held_figures.confirmed + held_figures.held
