"""The simulated Modbus PLC over real sockets: layout, control channel, faults, restarts, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.mapping.load import load_mapping
from gateway.sources.modbus.client import ModbusClient, ModbusExceptionResponse, ModbusNoResponse
from gateway.sources.modbus.registers import ModbusTag, plan_reads
from simulators.commands import SimCommandError
from simulators.json_control import json_command
from simulators.machine import SimMachineConfig
from simulators.modbus_plc import ModbusPlc, machine_layout
from tests.support import first_line_with, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]

MACHINES = [
    SimMachineConfig("PRESS-01", rate_hz=50.0, units_per_cycle=4, scrap_ratio=0.2, order="1000123", seed=1),
    SimMachineConfig("SHORT", rate_hz=20.0, width_bits=16),
    SimMachineConfig("LONG", rate_hz=20.0, width_bits=64, order="X-42"),
]


@pytest.fixture
async def plc():
    async with ModbusPlc(MACHINES, port=free_port(), control_port=free_port(), units={"LONG": 7}) as running:
        yield running


@pytest.fixture
async def client(plc):
    session = ModbusClient(plc.host, plc.port, timeout_s=1.0)
    await session.connect()
    yield session
    session.close()


async def shown(client: ModbusClient, plc: ModbusPlc, machine: str, table: str = "holding") -> dict:
    """What a poller reads for ``machine``: its tags by name, in one request, decoded by the gateway's
    codec from the simulator's layout (the simulator encodes with its own)."""
    tags = [ModbusTag(t.machine, t.role, t.register, t.type, table, t.length,  # type: ignore[arg-type]
                      word_order=t.word_order, byte_order=t.byte_order) for t in plc.layout(machine).values()]
    (read,) = plan_reads(tags)
    words = await client.read(read.table, read.start, read.count, plc.unit_of[machine])
    return {tag.role: value for tag, value in read.values(words)}


def expected(truth: dict) -> dict:
    return {"GoodCount": truth["good_count"], "ScrapCount": truth["scrap_count"],
            "State": truth["state"], "OrderNumber": truth["order"]}


def test_layout_is_documented_and_fixed() -> None:
    layout = machine_layout("LATHE-04", 1)
    assert {name: (t.register, t.type, t.count) for name, t in layout.items()} == {
        "GoodCount": (100, "uint32", 2), "ScrapCount": (104, "uint32", 2),
        "State": (108, "uint16", 1), "OrderNumber": (110, "string", 10),
    }
    assert machine_layout("M", 3, width_bits=64, stride=20)["ScrapCount"].register == 64
    with pytest.raises(ValueError, match="stride >= 20"):
        machine_layout("M", 1, stride=19)


def test_the_demo_mapping_reads_the_demo_lathe_where_the_simulator_writes_it() -> None:
    mapping = load_mapping(PROJECT_ROOT / "mappings" / "demo-plant.yaml")
    lathe = mapping.machines["LATHE-04"]
    layout = machine_layout("LATHE-04", 1)
    assert lathe.counters.good.register == layout["GoodCount"].register
    assert lathe.counters.scrap.register == layout["ScrapCount"].register
    assert (lathe.order.register, lathe.order.length) == (layout["OrderNumber"].register, layout["OrderNumber"].count)
    assert mapping.sources[lathe.source].modbus.port == 5020


async def test_after_pause_every_table_shows_exactly_the_truth(plc, client):
    await asyncio.sleep(0.3)
    truths = await json_command(plc.host, plc.control_port, "*", "pause")
    for machine, truth in truths.items():
        assert truth["good_cycles"] + truth["scrap_cycles"] > 0
        assert await shown(client, plc, machine) == expected(truth)
        assert await shown(client, plc, machine, "input") == expected(truth)
    assert await client.read("discrete_input", 1, 1, 1) == [False]  # paused: not producing
    await plc.command("PRESS-01", "resume")
    assert await client.read("coil", 1, 1, 1) == [True]
    assert plc.unit("LONG").unit_id == 7 and await shown(client, plc, "LONG") == expected(truths["LONG"])


async def test_reset_jump_and_job_reset_through_the_control_channel(plc, client):
    await plc.command("*", "pause")
    reset = await json_command(plc.host, plc.control_port, "PRESS-01", "reset")
    assert (await shown(client, plc, "PRESS-01"))["GoodCount"] == 0 == reset["good_count"]
    jumped = await json_command(plc.host, plc.control_port, "SHORT", "jump_near_rollover", "3")
    assert (await shown(client, plc, "SHORT"))["GoodCount"] == 2**16 - 3 == jumped["good_count"]
    job = await json_command(plc.host, plc.control_port, "LONG", "set_order", "1000125,reset")
    assert await shown(client, plc, "LONG") == expected(job) and job["order"] == "1000125"


async def test_refusals_come_back_as_errors(plc):
    with pytest.raises(SimCommandError, match="unknown command 'explode'"):
        await json_command(plc.host, plc.control_port, "PRESS-01", "explode")
    with pytest.raises(SimCommandError, match="unknown machine 'NOPE'"):
        await json_command(plc.host, plc.control_port, "NOPE", "fault", "busy")
    with pytest.raises(SimCommandError, match="fault: expected one of none, busy"):
        await json_command(plc.host, plc.control_port, "PRESS-01", "fault", "on fire")
    with pytest.raises(SimCommandError, match="at most 20 characters"):
        await plc.command("PRESS-01", "set_order", "1" * 21)


async def test_faults_answer_for_one_machine_only(plc, client):
    await json_command(plc.host, plc.control_port, "PRESS-01", "fault", "busy")
    with pytest.raises(ModbusExceptionResponse, match="exception 6"):
        await shown(client, plc, "PRESS-01")
    await shown(client, plc, "SHORT")  # same unit, other registers: fine
    await plc.fault("PRESS-01", "illegal_address")  # replaces the fault before it
    with pytest.raises(ModbusExceptionResponse, match="exception 2"):
        await client.read("coil", 1, 1, 1)
    await plc.fault("PRESS-01", "timeout")
    with pytest.raises(ModbusNoResponse):
        await shown(client, plc, "PRESS-01")
    await plc.fault("*", "none")
    fresh = ModbusClient(plc.host, plc.port, timeout_s=1.0)  # a timed-out connection is not reused
    await fresh.connect()
    truth = await plc.command("PRESS-01", "pause")
    assert await shown(fresh, plc, "PRESS-01") == expected(truth)
    fresh.close()


async def test_machines_keep_counting_while_the_server_is_down(plc):
    before = await json_command(plc.host, plc.control_port, "SHORT", "truth")
    await plc.stop_server()
    assert not plc.serving
    with pytest.raises(OSError):
        await ModbusClient(plc.host, plc.port, timeout_s=0.5).connect()
    await asyncio.sleep(0.3)
    await plc.start_server()
    after = await plc.command("SHORT", "pause")
    assert after["good_cycles"] >= before["good_cycles"] + 5  # 20 Hz for well over 0.3 s
    session = ModbusClient(plc.host, plc.port, timeout_s=1.0)
    await session.connect()
    assert await shown(session, plc, "SHORT") == expected(after)
    session.close()


async def test_word_and_byte_order_of_the_whole_plc_can_be_chosen():
    config = SimMachineConfig("M", rate_hz=0.0, initial_count=0x11223344, order="AB")
    async with ModbusPlc([config], port=free_port(), word_order="little", byte_order="little") as dcba:
        session = ModbusClient(dcba.host, dcba.port, timeout_s=1.0)
        await session.connect()
        assert await session.read("holding", 100, 2, 1) == [0x4433, 0x2211]
        assert await session.read("holding", 110, 1, 1) == [0x4241]  # "AB", low byte first
        assert await shown(session, dcba, "M") == {"GoodCount": 0x11223344, "ScrapCount": 0x11223344,
                                                   "State": 6, "OrderNumber": "AB"}
        session.close()


def test_configurations_that_cannot_be_served_are_refused():
    with pytest.raises(ValueError, match="longer than 20 characters"):
        ModbusPlc([SimMachineConfig("M", rate_hz=1, order="9" * 21)])
    with pytest.raises(ValueError, match="do not fit in 65536 registers"):
        ModbusPlc([SimMachineConfig(f"M{i}", rate_hz=1) for i in range(700)])
    with pytest.raises(ValueError, match="not simulated: GHOST"):
        ModbusPlc([SimMachineConfig("M", rate_hz=1)], units={"GHOST": 2})


async def test_cli_serves_until_sigterm():
    port, control = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.modbus_plc", "--port", str(port), "--control-port", str(control),
        "--demo", "--machine", "EXTRA,rate=2,width=16",
        cwd=PROJECT_ROOT, env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}, stderr=asyncio.subprocess.PIPE,
    )
    try:
        started = await asyncio.wait_for(first_line_with(process.stderr, "serving"), timeout=15)
        assert f"modbus 127.0.0.1:{port}" in started and "LATHE-04 at 100, EXTRA at 200" in started
        result = await json_command("127.0.0.1", control, "*", "truth")
        assert set(result) == {"LATHE-04", "EXTRA"} and result["EXTRA"]["width_bits"] == 16
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
