"""The gateway in-process against the simulated PLC over real sockets, per scenario.

Each scenario drives the simulator through a fault and checks that the ledger accounts
for every unit the simulator made (or records exactly what it could not observe).
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.demo import wait_until
from gateway.ledger.reports import summary
from gateway.mapping.model import Mapping
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import OpcUaPlc, node_id
from tests.integration.lines import Line
from tests.support import free_port


def mapping_for(port: int, machine: str, *, order_tag: bool = True, order: str = "1000124",
                counter_type: str = "uint32", every_units: int = 20) -> Mapping:
    return Mapping.model_validate({
        "sources": {"sim": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": 50,
                                      "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}},
        "machines": {machine: {
            "source": "sim", "work_center": "WC-ASSY", "operation": "0010",
            "counters": {"good": {"node": node_id(machine, "GoodCount"), "type": counter_type},
                         "scrap": {"node": node_id(machine, "ScrapCount"), "type": counter_type}},
            "order": {"node": node_id(machine, "OrderNumber")} if order_tag else order,
            "confirm": {"every_units": every_units, "every_seconds": 1},
        }},
    })


class Plant(Line):
    """The OPC UA simulator with one machine, the gateway and a ledger."""

    def __init__(self, url: str, config: SimMachineConfig, *, load_masterdata_now: bool = True, **mapping_kw):
        port = free_port()
        super().__init__(url, OpcUaPlc([config], port=port, tick_s=0.01), mapping_for(port, config.name, **mapping_kw),
                         load_masterdata_now=load_masterdata_now)


@pytest.mark.slow
async def test_plc_reset_counts_after_the_reset_and_records_the_anomaly(ledger_url):
    async with Plant(ledger_url, SimMachineConfig("ASSY-03", rate_hz=50, order="1000124", seed=1)) as p:
        await p.produce(0.6)
        before_reset = p.truth_units() - p.start
        await p.plc.command("ASSY-03", "reset")  # both counters to 0, like a PLC restart
        await p.produce(0.6)
    made = p.truth_units() - p.start
    totals = summary(p.engine).machines["ASSY-03"]
    # Units made between the last reading and the reset are unobservable; here there are
    # none (the machine was paused), so the ledger must hold every unit.
    assert before_reset > 0 and totals.accounted == made
    kinds = [a.kind for a in p.anomalies()]
    assert "reset" in kinds


@pytest.mark.slow
async def test_uint16_rollover_is_counted_exactly(ledger_url):
    config = SimMachineConfig("ASSY-03", rate_hz=200, order="1000124", width_bits=16, initial_count=65536 - 50, seed=2)
    async with Plant(ledger_url, config, counter_type="uint16") as p:
        await p.produce(1.0)
    made = p.truth_units() - p.start
    assert p.plc.models["ASSY-03"].good_count < 65536 - 50, "the counter must have rolled over"
    assert summary(p.engine).machines["ASSY-03"].accounted == made
    assert not [a for a in p.anomalies() if a.kind == "reset"]


@pytest.mark.slow
async def test_order_change_with_job_reset_splits_units_between_orders(ledger_url):
    async with Plant(ledger_url, SimMachineConfig("ASSY-03", rate_hz=60, order="1000124", seed=3)) as p:
        await p.produce(0.5)
        first = p.truth_units() - p.start
        await p.plc.command("ASSY-03", "set_order", "1000123,reset")  # EUROMAP-77-style job reset
        await p.produce(0.5)
    total = p.truth_units() - p.start
    assert p.units_by_order() == {"1000124": first, "1000123": total - first}
    assert not [a for a in p.anomalies() if a.kind == "reset"], "a job reset is expected, not an anomaly"
    # Order 1000123's operation 0010 runs on the press, not on this assembly machine: said once.
    [mismatch] = [a for a in p.anomalies() if a.kind == "work_center"]
    assert "runs on WC-PRESS, but this machine is on WC-ASSY" in mismatch.detail


@pytest.mark.slow
async def test_units_of_an_unknown_order_wait_and_are_confirmed_once_it_is_loaded(sqlite_url):
    config = SimMachineConfig("ASSY-03", rate_hz=50, order="1000124", seed=4)
    async with Plant(sqlite_url, config, load_masterdata_now=False) as p:
        await p.produce(0.5)
        s = summary(p.engine)
        assert s.machines["ASSY-03"].confirmations == 0
        assert s.machines["ASSY-03"].pending == p.truth_units() - p.start
        assert [a.kind for a in p.anomalies()] == ["unknown_order"]
        await asyncio.to_thread(p.load_masterdata)
        await wait_until(lambda: p.gateway.writer.health.confirmations > 0, 15, "the held units to be confirmed")
    s = summary(p.engine)
    assert s.machines["ASSY-03"].pending == 0
    assert s.machines["ASSY-03"].accounted == p.truth_units() - p.start
