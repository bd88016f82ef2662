"""The EUROMAP 77 preset and ``count_when`` end to end: the simulator's EUROMAP 77 address
space over a real OPC UA socket, the gateway in-process, a real ledger.

Job changes with ResetJobCounters split the units exactly between the orders with no
anomaly while the gateway reads; a job change while it was stopped is counted from the
job reset, and the old job's unread tail is named as unknown (never guessed); a stop between
the new JobName and the counters' reset leaves the job reset pending in the ledger, and the
restart takes the counters' first value for the new job's. The PackML preset counts
ProdProcessedCount as the total of good and defective parts: yield is total − scrap.
``gateway demo --preset`` runs the demo's machines through either preset and reconciles. Units made
outside ``count_when`` are held as anomalies with their quantity, and accepting one posts it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from sqlalchemy import select

from gateway.demo import wait_until
from gateway.ledger import schema
from gateway.ledger.anomalies import accept
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.service import Gateway
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import NAMESPACE_URI, OpcUaPlc
from tests.integration.lines import ROOT, Line
from tests.support import free_port

pytestmark = pytest.mark.slow

MAPPING = """
sources:
  imm: {{opcua: {{endpoint: "opc.tcp://127.0.0.1:{port}", publishing_interval_ms: 50, reconnect_min_s: 0.1,
                  reconnect_max_s: 0.5}}}}
machines:
  IMM-01:
    template: {preset}
    with: {{prefix: "nsu={ns};s=IMM-01"}}
    source: imm
    work_center: WC-PRESS
    confirm: {{every_units: 25, every_seconds: 1}}{extra}
"""


class Imm(Line):
    """IMM-01 (upc 1: raw job counters are parts) on a simulator serving EUROMAP 77."""

    def __init__(self, url: str, folder: Path, *, extra: str = "", order: str = "1000123", preset: str = "euromap77"):
        port = free_port()
        file = folder / "mapping.yaml"
        file.write_text(MAPPING.format(port=port, ns=NAMESPACE_URI, extra=extra, preset=preset))
        self.mapping = load_mapping(file)
        plc = OpcUaPlc([SimMachineConfig("IMM-01", rate_hz=60, scrap_ratio=0.1, order=order, seed=5)], port=port,
                       tick_s=0.01, interfaces=(preset,))
        super().__init__(url, plc, self.mapping)

    def kinds(self) -> list[str]:
        return [a.kind for a in self.anomalies()]


async def test_job_changes_with_reset_job_counters_split_units_exactly(ledger_url, tmp_path):
    async with Imm(ledger_url, tmp_path) as p:
        await p.produce(0.5)
        first = p.made()
        await p.plc.command("IMM-01", "set_order", "1000124,reset")  # JobName changes, ResetJobCounters
        await p.produce(0.5)
        second = p.made() - first
        await p.plc.command("IMM-01", "set_order", "1000123,reset")
        await p.produce(0.5)
    third = p.made() - first - second
    assert first > 0 and second > 0 and third > 0
    assert p.units_by_order() == {"1000123": first + third, "1000124": second}
    assert not {"reset", "job_change_unseen", "not_producing"} & set(p.kinds())
    assert summary(p.engine).machines["IMM-01"].accounted == p.made()


async def test_job_change_while_the_gateway_is_stopped_names_the_unread_tail(ledger_url, tmp_path):
    async with Imm(ledger_url, tmp_path) as p:
        await p.produce(0.4)
    read_by_first = p.made()
    last_good = p.plc.models["IMM-01"].good_count
    # Stopped: the old job makes a few more parts nobody reads, then the job changes.
    await p.plc.start()
    await p.plc.command("IMM-01", "resume")
    await asyncio.sleep(0.3)
    before_change = await p.plc.command("IMM-01", "pause")  # the truth up to the change, exactly
    tail = Decimal(before_change["good_units"] + before_change["scrap_units"]) - p.starts["IMM-01"] - read_by_first
    await p.plc.command("IMM-01", "set_order", "1000124,reset")
    await p.plc.command("IMM-01", "resume")
    await asyncio.sleep(0.3)
    # Started again while the machine produces: the counts made meanwhile are judged by the
    # state it reads at the start (PRODUCTION), the only one known.
    p.gateway, p.stop = Gateway(p.mapping, p.engine), asyncio.Event()
    p.task = asyncio.create_task(p.gateway.run(p.stop))
    # Its first values read while the machine still produces (a slow start on a busy machine read
    # them after the pause below: counts while not producing, held).
    await wait_until(lambda: "IMM-01" in p.gateway.machines and p.gateway.machines["IMM-01"].order == "1000124",
                     20, "the gateway to read the new job")
    await asyncio.sleep(0.3)
    await p.plc.command("IMM-01", "pause")
    await p.settle()
    await p.__aexit__(None, None, None)
    new_job = p.made() - read_by_first - tail
    assert tail > 0 and new_job > 0
    assert p.units_by_order() == {"1000123": read_by_first, "1000124": new_job}
    unseen = {a.counter: a for a in p.anomalies() if a.kind == "job_change_unseen"}
    assert sorted(unseen) == ["good", "scrap"]
    assert f"the previous job's counts after {last_good} (its last reading" in unseen["good"].detail
    assert all(a.units_held == 0 and a.status == "recorded" for a in unseen.values())
    assert "reset" not in p.kinds()


def job_reset_row(engine) -> tuple[str, str, str] | None:
    c = schema.machine_states.c
    with engine.connect() as conn:
        row = conn.execute(select(c.order_no, c.job_reset_pending, c.job_change_unseen)
                           .where(c.machine == "IMM-01")).first()
    return None if row is None else tuple(row)


async def test_a_stop_between_the_job_name_and_the_counters_reset_is_still_a_job_reset(ledger_url, tmp_path):
    async with Imm(ledger_url, tmp_path) as p:
        await p.produce(0.4)
        first = p.made()
        await p.plc.command("IMM-01", "set_order", "1000124")  # JobName changes; the counters not yet
        await wait_until(lambda: job_reset_row(p.engine)[0] == "1000124", 20, "the gateway to commit the new job")
        # Committed with the order change: both counters' next values are the new job's.
        assert job_reset_row(p.engine) == ("1000124", "good scrap", "")
    # Stopped; now ResetJobCounters, and the new job produces.
    await p.plc.start()
    await p.plc.command("IMM-01", "reset_job_counters")
    await p.plc.command("IMM-01", "resume")
    await asyncio.sleep(0.3)
    p.gateway, p.stop = Gateway(p.mapping, p.engine), asyncio.Event()
    p.task = asyncio.create_task(p.gateway.run(p.stop))
    await asyncio.sleep(0.5)
    await p.plc.command("IMM-01", "pause")
    await p.settle()
    await p.__aexit__(None, None, None)
    second = p.made() - first
    assert first > 0 and second > 0
    assert p.units_by_order() == {"1000123": first, "1000124": second}
    assert not {"reset", "job_change_unseen", "implausible"} & set(p.kinds())
    assert job_reset_row(p.engine) == ("1000124", "", "")
    assert summary(p.engine).machines["IMM-01"].accounted == p.made()


async def test_units_outside_count_when_are_held_with_their_quantity(ledger_url, tmp_path):
    # Counting only in JobStatus 1 (NO_PRODUCTION): everything made in PRODUCTION is held.
    gate = f'\n    count_when: {{node: "nsu={NAMESPACE_URI};s=IMM-01.Jobs.ActiveJobValues.JobStatus", in: [1]}}'
    async with Imm(ledger_url, tmp_path, extra=gate) as p:
        await p.produce(0.5)
    made = p.made()
    totals = summary(p.engine).machines["IMM-01"]
    assert made > 0 and totals.held == made and totals.confirmed_yield + totals.confirmed_scrap == 0
    held = [a for a in p.anomalies() if a.kind == "not_producing"]
    assert sum(a.units_held for a in held) == made and {a.status for a in held} == {"open"}
    assert "while the machine was not producing (state 4, counting only in 1)" in held[0].detail
    confirmation, order, units = accept(p.engine, held[0].id, reason="set-up parts were good", order="1000123",
                                        operation="0010")
    assert (order, units) == ("1000123", held[0].units_held)
    assert summary(p.engine).machines["IMM-01"].held == made - units


async def test_packml_counts_processed_as_the_total_so_yield_is_total_minus_defective(ledger_url, tmp_path):
    async with Imm(ledger_url, tmp_path, preset="packml") as p:
        before = p.plc.models["IMM-01"].truth()
        await p.produce(0.6)
    truth = p.plc.models["IMM-01"].truth()
    good, scrap = truth["good_units"] - before["good_units"], truth["scrap_units"] - before["scrap_units"]
    assert good > 0 and scrap > 0
    totals = summary(p.engine).machines["IMM-01"]
    assert (totals.confirmed_yield, totals.confirmed_scrap) == (good, scrap)  # the defective not counted twice
    assert totals.counted == good + scrap and totals.balanced
    assert p.kinds() == []


@pytest.mark.parametrize("preset", ["euromap77", "packml"])
def test_demo_runs_the_machines_through_a_preset_and_reconciles(tmp_path, preset):
    port, db = free_port(), f"sqlite:///{tmp_path / 'demo.sqlite'}"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--preset", preset, "--seconds", "2",
                          "--port", str(port), "--db", db, "--http", "off"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"simulated PLCs: opc.tcp://127.0.0.1:{port} (PRESS-01, ASSY-03), {preset} address space" in out.stdout
    assert "reconciled: every simulated unit is in the ledger exactly once" in out.stdout
    result = summary(open_engine(db))
    assert sorted(result.machines) == ["ASSY-03", "PRESS-01"]
    assert all(m.balanced and m.confirmed_yield > 0 and m.held == 0 for m in result.machines.values())
    assert result.open_anomalies == 0 and result.duplicate_confirmation_ids == 0


def test_demo_refuses_a_preset_the_simulator_has_no_address_space_for():
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--preset", "opc40001", "--http", "off"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (1, "no demo for preset 'opc40001'; the simulator offers euromap77, "
                                               "packml\n")
