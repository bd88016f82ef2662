"""Fault 3: counters roll over (uint16 on ASSY-03, uint32 on PRESS-01) while the gateway is down.

The simulators start a few dozen counts below 2^16 and 2^32, the gateway takes its
baseline there and is killed; the machines count past the wrap; the restarted gateway
must count 2^W − last + value, not a reset.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow


def test_rollover_uint16_and_uint32_while_gateway_down(ledger_url, tmp_path, soak_round):
    with FaultLine(ledger_url, tmp_path, scenario="rollover while down",
                   assy_initial=2**16 - 40, press_initial=2**32 - 30) as line:
        assert line.start["ASSY-03"]["good_count"] > 2**16 - 50
        line.kill_gateway()
        line.sims.command("resume")
        time.sleep(3.0)  # ASSY-03 ~90 cycles, PRESS-01 ~75: both wrap
        truth = line.sims.truth()
        assert truth["ASSY-03"]["good_count"] < 2**16 - 40 and truth["PRESS-01"]["good_count"] < 2**32 - 30
        line.start_gateway()
        time.sleep(2.0)
        figures = line.finish()
        with line.engine.connect() as conn:
            epochs = {(r.machine, r.counter): r.epoch for r in conn.execute(select(schema.counter_states))}
            kinds = [r.kind for r in conn.execute(select(schema.anomalies))]
    assert epochs[("ASSY-03", "good")] == 1 and epochs[("PRESS-01", "good")] == 1
    assert "reset" not in kinds and "implausible" not in kinds
    assert figures.held == 0
