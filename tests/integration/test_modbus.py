"""The gateway in-process against the simulated Modbus PLC over real sockets, per scenario.

The same machines, faults and ground truth as the OPC UA scenarios, polled over Modbus
TCP: rollovers of 16- and 32-bit counters, the server gone for ten seconds while the
machine keeps counting, one unit failing next to a healthy one, an order change with a
job reset. The ledger must account for every unit the simulator made.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from gateway.demo import wait_until
from gateway.ledger.reports import summary
from gateway.mapping.model import Mapping
from simulators.machine import SimMachineConfig
from simulators.modbus_plc import ModbusPlc
from tests.integration.lines import Line
from tests.support import free_port


def modbus_mapping(plc: ModbusPlc, *, word_order: str = "big", byte_order: str = "big") -> Mapping:
    """Every simulated machine on a source of its own unit, addresses from the simulator's layout."""
    sources, machines = {}, {}
    for name, model in plc.models.items():
        layout, unit = plc.layout(name), plc.unit_of[name]
        counter = {"type": f"uint{model.config.width_bits}", "word_order": word_order, "byte_order": byte_order}
        sources[f"unit-{unit}"] = {"modbus": {"host": plc.host, "port": plc.port, "unit": unit,
                                              "poll_interval_ms": 50, "timeout_s": 0.5,
                                              "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}
        machines[name] = {
            "source": f"unit-{unit}", "work_center": "WC-ASSY", "operation": "0010",
            "counters": {"good": {"register": layout["GoodCount"].register, **counter},
                         "scrap": {"register": layout["ScrapCount"].register, **counter}},
            "order": {"register": layout["OrderNumber"].register, "type": "string",
                      "length": layout["OrderNumber"].count, "byte_order": byte_order},
            "confirm": {"every_units": 20, "every_seconds": 1},
        }
    return Mapping.model_validate({"sources": sources, "machines": machines})


def modbus_line(url: str, *configs: SimMachineConfig, units: dict[str, int] | None = None, **orders: str) -> Line:
    plc = ModbusPlc(list(configs), port=free_port(), tick_s=0.01, units=units, **orders)
    return Line(url, plc, modbus_mapping(plc, **orders))


@pytest.mark.slow
async def test_uint16_rollover_is_counted_exactly(ledger_url):
    config = SimMachineConfig("ASSY-03", rate_hz=200, order="1000124", width_bits=16, initial_count=65536 - 50, seed=2)
    async with modbus_line(ledger_url, config) as line:
        await line.produce(1.0)
    assert line.plc.models["ASSY-03"].good_count < 65536 - 50, "the counter must have rolled over"
    assert summary(line.engine).machines["ASSY-03"].accounted == line.made() > 150
    assert not [a for a in line.anomalies() if a.kind == "reset"]


@pytest.mark.slow
async def test_uint32_rollover_in_little_endian_words_and_bytes_is_counted_exactly(ledger_url):
    # DCBA: the other end of what PLC vendors do; both sides say so in their settings.
    config = SimMachineConfig("ASSY-03", rate_hz=200, order="1000124", width_bits=32, initial_count=2**32 - 50, seed=3)
    async with modbus_line(ledger_url, config, word_order="little", byte_order="little") as line:
        await line.produce(1.0)
    assert line.plc.models["ASSY-03"].good_count < 2**32 - 50, "the counter must have rolled over"
    assert summary(line.engine).machines["ASSY-03"].accounted == line.made() > 150
    assert not [a for a in line.anomalies() if a.kind == "reset"]


@pytest.mark.slow
async def test_server_gone_for_ten_seconds_loses_no_unit(sqlite_url):
    """The machine keeps counting while nobody can read it; its counter is cumulative, so
    the first read after the outage carries every unit made meanwhile."""
    config = SimMachineConfig("ASSY-03", rate_hz=20, order="1000124", seed=4)
    with capture_logs() as logs:
        async with modbus_line(sqlite_url, config) as line:
            await line.plc.command("ASSY-03", "resume")
            await asyncio.sleep(0.5)
            await line.plc.stop_server()
            during = line.truth_units()
            await asyncio.sleep(10)
            assert line.truth_units() - during >= 150, "the machine must have counted through the outage"
            await line.plc.start_server()
            await asyncio.sleep(1.0)
            await line.plc.command("ASSY-03", "pause")
            await line.settle()
            health = line.gateway.sources[0].health
    assert summary(line.engine).machines["ASSY-03"].accounted == line.made()
    assert health.reconnects >= 1
    assert any(e["event"] == "modbus.disconnected" for e in logs)
    assert not line.anomalies()


@pytest.mark.slow
async def test_a_failing_unit_never_stops_the_machine_next_to_it(sqlite_url):
    lathe = SimMachineConfig("PRESS-01", rate_hz=30, order="1000124", seed=5)
    mill = SimMachineConfig("ASSY-03", rate_hz=30, order="1000124", seed=6)
    with capture_logs() as logs:
        async with modbus_line(sqlite_url, lathe, mill, units={"PRESS-01": 1, "ASSY-03": 2}) as line:
            await line.plc.command("*", "resume")
            for fault in ("timeout", "busy", "illegal_address", "device_failure"):
                await line.plc.fault("PRESS-01", fault)
                counted = line.gateway.machines["ASSY-03"].counted_units
                # 25 units at 30 Hz: longer than the 0.5 s a read may go unanswered
                await wait_until(lambda c=counted: line.gateway.machines["ASSY-03"].counted_units > c + 25, 3,
                                 f"ASSY-03 to be counted while PRESS-01 answers {fault}")
                await line.plc.fault("PRESS-01", "none")
            await line.plc.command("*", "pause")
            await line.settle()
    totals = summary(line.engine).machines
    for machine in ("PRESS-01", "ASSY-03"):
        assert totals[machine].accounted == line.made(machine) > 80
    said = {(e["event"], e.get("error", "").split(" (")[0]) for e in logs if e.get("source") == "unit-1"}
    assert {("modbus.disconnected", "no response within 0.5 s"), ("modbus.read_failed", "Modbus exception 6"),
            ("modbus.bad_tag", "Modbus exception 2"), ("modbus.read_failed", "Modbus exception 4")} <= said
    # unit-2 neither lost its connection nor failed a read; a poll overrun (one poll slower than the interval)
    # is the loaded machine's doing, not the neighbour's, and is said once per connection at most
    troubles = [e for e in logs if e.get("source") == "unit-2" and e["log_level"] in ("warning", "error")]
    assert [e for e in troubles if e["event"] != "modbus.poll_overrun"] == []
    assert len(troubles) <= 1


@pytest.mark.slow
async def test_order_change_with_job_reset_splits_units_between_orders(sqlite_url):
    """The order register is read in the same request as the counters and handed on
    before them, so zeroed job counters are a job reset, not a PLC reset."""
    async with modbus_line(sqlite_url, SimMachineConfig("ASSY-03", rate_hz=60, order="1000124", seed=7)) as line:
        await line.produce(0.5)
        first = line.made()
        await line.plc.command("ASSY-03", "set_order", "1000123,reset")
        await line.produce(0.5)
    assert line.units_by_order() == {"1000124": first, "1000123": line.made() - first}
    assert not [a for a in line.anomalies() if a.kind == "reset"], "a job reset is expected, not an anomaly"
