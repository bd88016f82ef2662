"""Exactly once across kill -9: simulator and gateway as separate processes.

The simulators — machines on OPC UA and a lathe on Modbus TCP — keep counting while the
gateway is killed (SIGKILL, no chance to clean up) and restarted several times. At the
end the ledger must account for every unit the simulators made since the gateway's
baseline — exactly once — and the confirmations' counter ranges must chain without a
gap or an overlap.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import select

from gateway.domain.confirming import parse_positions
from gateway.ledger import schema
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from tests.integration.lines import ROOT, Simulators, line_mapping, spawn, wait_for
from tests.support import free_port

KILLS = int(os.environ.get("GATEWAY_TEST_KILLS", "5"))

MACHINES = ("PRESS-01", "ASSY-03", "LATHE-04")


def _ledger_matches_counters(engine, sims: Simulators) -> bool:
    truth = sims.truth()
    with engine.connect() as conn:
        states = {(r.machine, r.counter): r.raw for r in conn.execute(select(schema.counter_states))}
    want = {(m, c): truth[m][f"{c}_count"] for m in MACHINES for c in ("good", "scrap")}
    return states == want


@pytest.mark.slow
def test_kill_9_loses_nothing_and_counts_nothing_twice(ledger_url, tmp_path):
    port, modbus_port, control_port = free_port(), free_port(), free_port()
    sims = Simulators(f"opc.tcp://127.0.0.1:{port}", control_port)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(line_mapping(port, modbus_port))
    log = tmp_path / "processes.log"
    sim = spawn(["-m", "simulators.opcua_plc", "--port", str(port),
                  "--machine", "PRESS-01,rate=25,upc=4,scrap=0.05,order=1000123,seed=7",
                  "--machine", "ASSY-03,rate=30,scrap=0.1,order=1000124,seed=8"], log)
    modbus_sim = spawn(["-m", "simulators.modbus_plc", "--port", str(modbus_port),
                         "--control-port", str(control_port),
                         "--machine", "LATHE-04,rate=20,scrap=0.05,order=1000125,seed=9"], log)
    gateway = None
    rng = random.Random(20261125)
    try:
        wait_for(sims.truth, 30, "the simulators")
        sims.command("pause")
        load = subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load",
                               "mappings/demo-masterdata.yaml", "--db", ledger_url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert load.returncode == 0, load.stderr
        engine = open_engine(ledger_url, create=False)
        gw_args = ["-m", "gateway.cli", "run", "--mapping", str(mapping), "--db", ledger_url, "--log-json"]
        gateway = spawn(gw_args, log)
        wait_for(lambda: _ledger_matches_counters(engine, sims), 60, "the gateway's baseline")
        start = sims.truth()
        sims.command("resume")

        for _ in range(KILLS):
            time.sleep(rng.uniform(0.8, 2.5))
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(10)
            time.sleep(rng.uniform(0.1, 1.0))  # the machines keep counting meanwhile
            gateway = spawn(gw_args, log)

        time.sleep(2.0)
        sims.command("pause")
        wait_for(lambda: _ledger_matches_counters(engine, sims), 60, "the gateway to catch up")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
        end = sims.truth()
    finally:
        for proc in (gateway, sim, modbus_sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    made = {m: Decimal(end[m]["good_units"] + end[m]["scrap_units"] - start[m]["good_units"] - start[m]["scrap_units"])
            for m in MACHINES}
    s = summary(engine)
    assert s.duplicate_confirmation_ids == 0
    for machine, units in made.items():
        assert units > 100, f"{machine} made too little to prove anything"
        totals = s.machines[machine]
        assert totals.pending == 0, "graceful stop confirms everything pending"
        assert totals.accounted == units, (machine, totals, units)
        good_made = end[machine]["good_units"] - start[machine]["good_units"]
        assert totals.confirmed_yield == good_made

    # Ranges chain: every counter position from the baseline to the end is in exactly one confirmation.
    with engine.connect() as conn:
        rows = conn.execute(select(schema.confirmations)).all()
        final = {(r.machine, r.counter): (r.epoch, r.raw) for r in conn.execute(select(schema.counter_states))}
    ranges = defaultdict(list)
    for r in rows:
        for (c, a), (_, b) in zip(parse_positions(r.start_pos), parse_positions(r.end_pos), strict=True):
            ranges[(r.machine, c)].append(((a.epoch, a.raw), (b.epoch, b.raw)))
    for key, spans in ranges.items():
        spans.sort()
        for (_, prev_end), (next_start, _) in zip(spans, spans[1:]):
            assert next_start == prev_end, f"{key}: gap or overlap at {prev_end} → {next_start}"
        assert spans[-1][1] == final[key]
        machine, counter = key
        assert spans[0][0] == (0, start[machine][f"{counter}_count"])

    # Stock = opening + receipts − issues, per material and location.
    with engine.connect() as conn:
        moved = defaultdict(Decimal)
        for m in conn.execute(select(schema.goods_movements)):
            moved[(m.material, m.location)] += m.qty
        balances = defaultdict(Decimal)  # a row per lot (and serial): summed per material and location
        for r in conn.execute(select(schema.stock)):
            balances[(r.material, r.location)] += r.qty
    assert dict(balances) == dict(moved)
