"""Fault 2: the OPC UA PLC restarts (process killed, started again, counters back at 0).

The link is cut first, so the old PLC counts some units the gateway never sees: that is
the unobservable window. Units counted after the restart are confirmed; the reset is a
``reset`` anomaly whose start position is the last value the gateway knew, so the
window is (the old PLC's final count − that value); nothing before is confirmed twice.

The new PLC comes back in stop and starts producing once the gateway has seen it. A
reset is only visible as a counter going down (DESIGN §3): a PLC that had already
counted past the last known value before the gateway's first reading would pass for
normal counting, and those units would be lost without an anomaly.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine
from tests.integration.lines import wait_for

pytestmark = pytest.mark.slow
RESTARTED = ("PRESS-01", "ASSY-03")
UNITS_PER_COUNT = {"PRESS-01": 4, "ASSY-03": 1}


def _resets(line: FaultLine) -> list:
    with line.engine.connect() as conn:
        return conn.execute(select(schema.anomalies).where(schema.anomalies.c.kind == "reset")).all()


def test_plc_restart_counters_back_at_zero(ledger_url, tmp_path, soak_round):
    with FaultLine(ledger_url, tmp_path, scenario="PLC restart") as line:
        line.sims.command("resume")
        time.sleep(2.0)
        line.opc_proxy.set_mode("blackhole")  # the gateway misses the last counts of the old PLC
        time.sleep(1.0)
        known = {k: v for k, v in line.counters_in_ledger().items() if k[0] in RESTARTED}
        line.restart_opcua_plc(paused=True)
        line.opc_proxy.set_mode("reset")  # the gateway's session to the old PLC is gone
        time.sleep(0.5)
        line.opc_proxy.set_mode("pass")
        seen = {k for k, v in known.items() if v > 0}
        wait_for(lambda: {(a.machine, a.counter) for a in _resets(line)} >= seen, 30, "the reset anomalies")
        for machine in RESTARTED:
            line.sims.command("resume", machine)
        time.sleep(2.5)
        line.sims.command("pause")
        line.wait_caught_up()
        unobservable = {}
        for (machine, counter), last_known in known.items():
            anomalies = [a for a in _resets(line) if (a.machine, a.counter) == (machine, counter)]
            if last_known > 0:
                (anomaly,) = anomalies
                assert anomaly.start_pos == f"0:{last_known}", "the anomaly records the last known value"
                assert anomaly.status == "recorded" and anomaly.units_held == 0
            final = line.retired[machine][f"{counter}_count"]
            unobservable[machine] = unobservable.get(machine, 0) + (final - last_known) * UNITS_PER_COUNT[machine]
        assert sum(unobservable.values()) > 0, "the cut should have hidden some units"
        figures = line.finish(unobservable=unobservable)
    assert figures.lost == 0
