"""Repetitive production across a period boundary and kill -9: simulator and gateway as processes.

Two machines without orders count on a simulated OPC UA PLC while the gateway's clock (shifted,
``shifted_gateway``) passes midnight of 31 October in Berlin; the gateway is killed (SIGKILL)
and restarted several times before and after midnight, the machines counting on meanwhile. At
the end every unit the simulator made is in exactly one confirmation, the confirmations chain
over each counter without a gap or an overlap, and they are on October's or November's
collector — none anywhere else.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from gateway.ledger import schema
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from simulators.control import sim_command_sync
from simulators.opcua_plc import node_id
from tests.integration.lines import ROOT, spawn, wait_for
from tests.integration.test_repetitive import MACHINES, NOV, OCT, chained
from tests.support import free_port

BOUNDARY = datetime(2026, 10, 31, 23, tzinfo=UTC)  # 1 November 00:00 in Berlin
KILLS = 3
STARTUP_S = 20.0  # a gateway process is running within this (a loaded machine takes seconds to import)

MAPPING = """
sources:
  line-2:
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{port}", publishing_interval_ms: 50, reconnect_min_s: 0.2, reconnect_max_s: 1}}
machines:
""" + "".join(f"""
  {name}:
    source: line-2
    work_center: WC-ASSY
    counters:
      good:  {{{{node: "{node_id(name, 'GoodCount')}"}}}}
      scrap: {{{{node: "{node_id(name, 'ScrapCount')}"}}}}
    order: none
    product: HOUSING-B
    line: LINE-2
    confirm: {{{{every_units: 40, every_seconds: 1}}}}
""" for name in MACHINES)


def _caught_up(engine, endpoint: str) -> bool:
    truth = sim_command_sync(endpoint, "*", "truth")
    with engine.connect() as conn:
        states = {(r.machine, r.counter): r.raw for r in conn.execute(select(schema.counter_states))}
    return states == {(m, c): truth[m][f"{c}_count"] for m in MACHINES for c in ("good", "scrap")}


@pytest.mark.slow
def test_kill_9_around_a_period_boundary_loses_nothing_and_counts_nothing_twice(ledger_url, tmp_path):
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(port=port))
    log = tmp_path / "processes.log"
    sim = spawn(["-m", "simulators.opcua_plc", "--port", str(port), "--machine", "MOLD-05,rate=40,scrap=0.05,seed=5",
                 "--machine", "MOLD-06,rate=30,scrap=0.1,seed=6"], log)
    gateway = None
    rng = random.Random(20261031)
    try:
        wait_for(lambda: sim_command_sync(endpoint, "*", "truth"), 30, "the simulator")
        sim_command_sync(endpoint, "*", "pause")
        load = subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load",
                               "docs/worked-example-repetitive.yaml", "--db", ledger_url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert load.returncode == 0, load.stderr
        engine = open_engine(ledger_url, create=False)
        # The shifted clock is 1 h before midnight while the baseline is taken; then the machines
        # resume once the next gateway runs, at a moment its clock shows 4 s before midnight.
        def args(fake: datetime, at: float) -> list[str]:
            return ["-m", "tests.integration.shifted_gateway", fake.isoformat(), str(at),
                    "run", "--mapping", str(mapping), "--db", ledger_url, "--log-json"]

        gateway = spawn(args(BOUNDARY - timedelta(hours=1), time.time()), log)
        wait_for(lambda: _caught_up(engine, endpoint), 60, "the gateway's baseline")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
        resume_at = time.time() + STARTUP_S
        gw_args = args(BOUNDARY - timedelta(seconds=4), resume_at)
        gateway = spawn(gw_args, log)
        wait_for(lambda: log.read_text().count('"event": "gateway_started"') == 2, STARTUP_S, "the gateway to start")
        time.sleep(max(0.0, resume_at - time.time()))
        start = sim_command_sync(endpoint, "*", "truth")
        sim_command_sync(endpoint, "*", "resume")
        for _ in range(KILLS):  # at random moments, before and after midnight
            time.sleep(rng.uniform(1.0, 3.0))
            gateway.send_signal(signal.SIGKILL)
            gateway.wait(10)
            time.sleep(rng.uniform(0.1, 1.0))  # the machines keep counting meanwhile
            gateway = spawn(gw_args, log)
        time.sleep(2.0)
        sim_command_sync(endpoint, "*", "pause")
        wait_for(lambda: _caught_up(engine, endpoint), 60, "the gateway to catch up")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
        end = sim_command_sync(endpoint, "*", "truth")
    finally:
        for proc in (gateway, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    report = summary(engine)
    assert report.duplicate_confirmation_ids == 0
    for m in MACHINES:
        made = Decimal(end[m]["good_units"] + end[m]["scrap_units"] - start[m]["good_units"] - start[m]["scrap_units"])
        totals = report.machines[m]
        assert made > 100, f"{m} made too little to prove anything"
        assert totals.pending == totals.held == 0  # SIGTERM confirms what is pending; nothing was held
        assert totals.confirmed_yield + totals.confirmed_scrap == made, (m, totals, made)  # 0 lost, 0 twice
        assert chained(engine, m), f"{m}: counter ranges do not chain"
    with engine.connect() as conn:
        per_collector = defaultdict(Decimal)
        for r in conn.execute(select(schema.confirmations)):
            per_collector[r.order_no] += r.yield_qty + r.scrap_qty
    assert set(per_collector) == {OCT, NOV} and all(per_collector.values())
