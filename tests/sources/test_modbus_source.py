"""The Modbus source against a real Modbus TCP server: data types, grouping, faults, reconnects.

The server is ``simulators.modbus_server`` with exactly the registers each test needs;
values are written as raw registers, from the hand-written patterns of
``test_modbus_registers``, so what is checked here is what travels over the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from gateway.sources.base import Quality
from gateway.mapping.model import ModbusSource as ModbusSourceConfig
from gateway.sources.modbus.source import ModbusSource
from gateway.sources.modbus.registers import ModbusTag
from simulators.modbus_server import Fault, ModbusServer, ModbusUnit

from .conftest import Collector, free_port, running
from .test_modbus_registers import ORDERS, PATTERNS, STRING


def config(port: int, **overrides: object) -> ModbusSourceConfig:
    """Settings that make polls, timeouts and reconnects happen within a second."""
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_ms": 20,
        "timeout_s": 0.3,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    settings.update(overrides)
    return ModbusSourceConfig(**settings)


@asynccontextmanager
async def serving(*units: ModbusUnit) -> AsyncIterator[ModbusServer]:
    server = ModbusServer(list(units), port=free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def counters(*machines: tuple[str, int]) -> list[ModbusTag]:
    return [ModbusTag(machine, "good", register, "uint32") for machine, register in machines]


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- what is read -----------------------------------------------------------------------


def _typed_tags() -> Iterator[tuple[ModbusTag, list[int] | list[bool], object]]:
    """Every number type in every order, strings both ways, and bits: (tag, raw, value)."""
    register = 0
    for type_, (value, patterns) in PATTERNS.items():
        for word_order, byte_order in ORDERS:
            t = ModbusTag("M1", f"{type_}/{word_order}/{byte_order}", register, type_,
                          word_order=word_order, byte_order=byte_order)
            yield t, patterns[(word_order, byte_order)], value
            register += 4
    text, patterns = STRING
    for table, byte_order in (("holding", "big"), ("input", "little")):
        yield ModbusTag("M1", f"order/{table}", 150, "string", table, 5, byte_order=byte_order), patterns[byte_order], text
    yield ModbusTag("M1", "running", 3, "bool", "coil"), [True], True
    yield ModbusTag("M1", "alarm", 5, "bool", "discrete_input"), [True], True
    yield ModbusTag("M1", "stopped", 6, "bool", "discrete_input"), [False], False


async def test_every_data_type_and_word_and_byte_order_over_the_wire() -> None:
    unit = ModbusUnit(1, {"holding": [range(0, 200)], "input": [range(150, 155)],
                          "coil": [range(0, 8)], "discrete_input": [range(0, 8)]})
    typed = list(_typed_tags())
    for t, raw, _ in typed:
        unit.write(t.table, t.register, raw)
    async with serving(unit) as server:
        source = ModbusSource("lathes", config(server.port), [t for t, _, _ in typed], Collector())
        values = await source.read_once()
    assert {tv.role: tv.value for tv in values} == {t.role: value for t, _, value in typed}
    assert all(tv.quality is Quality.GOOD and tv.machine == "M1" for tv in values)
    # 128 registers of numbers: two holding reads; strings: one per table; bits: one per table.
    assert unit.reads == source.reads_per_poll == 6


async def test_counters_at_the_top_of_their_range_are_read_whole() -> None:
    unit = ModbusUnit(1, {"holding": [range(0, 8)]})
    unit.write("holding", 0, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF])
    tags = [ModbusTag("M1", "u16", 0, "uint16"), ModbusTag("M1", "u32", 1, "uint32"),
            ModbusTag("M1", "u64", 3, "uint64")]
    async with serving(unit) as server:
        values = await ModbusSource("lathes", config(server.port), tags, Collector()).read_once()
    assert [tv.value for tv in values] == [2**16 - 1, 2**32 - 1, 2**64 - 1]


async def test_grouping_sends_one_request_per_group_and_none_per_tag() -> None:
    machines = [(f"M{i}", 100 * i) for i in range(1, 6)]
    tags = counters(*machines) + [ModbusTag(m, "order", base + 10, "string", length=10) for m, base in machines]
    unit = ModbusUnit(1, {"holding": [range(100 * i, 100 * i + 20) for i in range(1, 6)]})
    async with serving(unit) as server:
        grouped = ModbusSource("lathes", config(server.port), tags, Collector())
        await grouped.read_once()
        per_group = unit.reads
        unit.reads = 0
        naive = ModbusSource("lathes", config(server.port), tags, Collector(), grouped=False)
        await naive.read_once()
    assert per_group == grouped.reads_per_poll == 5  # one read of 100i..100i+19 per machine
    assert unit.reads == naive.reads_per_poll == 10


# --- what is delivered ------------------------------------------------------------------


async def test_changed_values_only_and_everything_again_after_a_reconnect() -> None:
    unit = ModbusUnit(1, {"holding": [range(100, 120)]})
    tags = counters(("M1", 100)) + [ModbusTag("M1", "scrap", 104, "uint32"),
                                    ModbusTag("M1", "order", 110, "string", length=10)]
    unit.write("holding", 110, STRING[1]["big"])
    got = Collector()
    async with serving(unit) as server:
        source = ModbusSource("lathes", config(server.port), tags, got)
        async with running(source):
            await got.wait_for(lambda tv: tv.role == "good")
            first = got.batches[0]
            await asyncio.sleep(0.1)  # several polls of unchanged values
            assert len(got.batches) == 1
            unit.write("holding", 100, [0, 7])
            await got.wait_for(lambda tv: tv.value == 7)
            assert [(tv.role, tv.value) for tv in got.batches[1]] == [("good", 7)]
            await server.stop()
            await server.start()
            await wait_until(lambda: len(got.batches) == 3)
            health = source.health
    # The order tag leads its read's values: a job reset read with it is explained by it.
    assert [(tv.role, tv.value) for tv in first] == [("order", "1000125"), ("good", 0), ("scrap", 0)]
    assert [(tv.role, tv.value) for tv in got.batches[2]] == [("order", "1000125"), ("good", 7), ("scrap", 0)]
    assert health.reconnects == 1 and health.connected
    assert first[0].source_time == first[0].received_at  # no timestamps in Modbus: the time of the read


async def test_a_consumer_that_raises_gets_every_value_again_at_the_next_poll() -> None:
    unit = ModbusUnit(1, {"holding": [range(100, 106)]})
    got = Collector()
    calls = 0

    def flaky(batch: list) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("consumer bug")
        got(batch)

    async with serving(unit) as server:
        source = ModbusSource("lathes", config(server.port), counters(("M1", 100), ("M2", 104)), flaky)
        with capture_logs() as logs:
            async with running(source):
                await got.wait_for(lambda tv: tv.machine == "M2")
    assert [(tv.machine, tv.value) for tv in got.batches[0]] == [("M1", 0), ("M2", 0)]
    assert events(logs, "modbus.consumer_failed")
    assert source.health.reconnects == 0  # the connection was fine; only delivery is repeated


# --- faults -----------------------------------------------------------------------------


async def test_a_missing_register_in_a_bridged_gap_splits_the_read_and_stops_only_its_tag() -> None:
    # 102..109 and 120.. do not exist: the grouped read 100..111 is refused, and M3's tag
    # can never be read.
    unit = ModbusUnit(1, {"holding": [range(100, 102), range(110, 112)]})
    unit.write("holding", 100, [0, 5])
    unit.write("holding", 110, [0, 6])
    got = Collector()
    async with serving(unit) as server:
        source = ModbusSource("lathes", config(server.port), counters(("M1", 100), ("M2", 110), ("M3", 120)), got)
        with capture_logs() as logs:
            async with running(source):
                await got.wait_for(lambda tv: tv.machine == "M2")
                await asyncio.sleep(0.5)  # M3 retried with backoff meanwhile
                unit.write("holding", 100, [0, 9])
                await got.wait_for(lambda tv: tv.machine == "M1" and tv.value == 9)
                health = source.health
    assert [(tv.machine, tv.value) for tv in got.batches[0]] == [("M1", 5), ("M2", 6)]
    assert not any(tv.machine == "M3" for tv in got.values)  # never a made-up value
    assert health.bad_tags == {"holding 120..121 uint32": "Modbus exception 2 (illegal data address)"}
    (split,) = events(logs, "modbus.read_split")
    assert split["register"] == "holding 100..121" and split["machines"] == "M1, M2, M3"
    (bad,) = events(logs, "modbus.bad_tag")  # once, though retried several times
    assert (bad["source"], bad["machine"], bad["role"], bad["register"]) == ("lathes", "M3", "good", "holding 120..121")
    assert "0-based" in bad["hint"] and bad["retry_in_s"] > 0


async def test_a_busy_device_is_retried_with_backoff_and_reported_once_per_streak() -> None:
    unit = ModbusUnit(1, {"holding": [range(100, 102), range(300, 302)]})
    got = Collector()
    async with serving(unit) as server:
        source = ModbusSource("lathes", config(server.port), counters(("M1", 100), ("M2", 300)), got)
        with capture_logs() as logs:
            async with running(source):
                await got.wait_for(lambda tv: tv.machine == "M1")
                unit.set_fault(Fault.BUSY, "holding", range(100, 102))
                unit.write("holding", 100, [0, 1])
                for value in (1, 2, 3):  # M2 goes on while M1 is refused
                    unit.write("holding", 300, [0, value])
                    await got.wait_for(lambda tv, v=value: tv.machine == "M2" and tv.value == v)
                await asyncio.sleep(0.4)
                m1_reads, m2_reads = unit.reads_at[("holding", 100)], unit.reads_at[("holding", 300)]
                unit.clear_faults()
                await got.wait_for(lambda tv: tv.machine == "M1" and tv.value == 1)
    (failed,) = events(logs, "modbus.read_failed")
    assert (failed["source"], failed["machine"], failed["register"]) == ("lathes", "M1", "holding 100..101")
    assert failed["error"] == "Modbus exception 6 (server device busy)"
    assert "busy" in failed["hint"] and failed["retry_in_s"] >= 0.05
    assert events(logs, "modbus.read_recovered")[0]["machine"] == "M1"
    assert not events(logs, "modbus.disconnected")  # an exception answer is no reason to reconnect
    # Backoff (0.05 s doubling to 0.3 s), not a retry per 20 ms poll as M2 is read.
    assert m1_reads < 12 and m2_reads > 2 * m1_reads, (m1_reads, m2_reads)


async def test_a_unit_that_does_not_answer_is_reconnected_and_never_stalls_another_unit() -> None:
    lathe, mill = ModbusUnit(1, {"holding": [range(100, 102)]}), ModbusUnit(2, {"holding": [range(100, 102)]})
    got_lathe, got_mill = Collector(), Collector()
    async with serving(lathe, mill) as server:
        lathe_source = ModbusSource("lathe", config(server.port, unit=1), counters(("LATHE", 100)), got_lathe)
        mill_source = ModbusSource("mill", config(server.port, unit=2), counters(("MILL", 100)), got_mill)
        with capture_logs() as logs:
            async with running(lathe_source), running(mill_source):
                await got_lathe.wait_for(lambda tv: True)
                lathe.set_fault(Fault.TIMEOUT)
                for value in range(1, 6):
                    mill.write("holding", 100, [0, value])
                    await got_mill.wait_for(lambda tv, v=value: tv.value == v, timeout=0.5)
                    await asyncio.sleep(0.1)
                lathe.write("holding", 100, [0, 42])
                lathe.clear_faults()
                server.release_held()
                await got_lathe.wait_for(lambda tv: tv.value == 42)
    lost = [e for e in events(logs, "modbus.disconnected") if e["source"] == "lathe"]
    assert lost and "no response within 0.3 s (reading holding 100..101 for LATHE)" in lost[0]["error"]
    assert "unit id" in lost[0]["hint"]
    assert lathe_source.health.reconnects >= 1 and mill_source.health.reconnects == 0


async def test_an_unknown_unit_behind_a_gateway_is_named_with_a_hint() -> None:
    async with serving(ModbusUnit(1, {"holding": [range(100, 102)]})) as server:
        source = ModbusSource("lathes", config(server.port, unit=9), counters(("M1", 100)), Collector())
        with capture_logs() as logs:
            values = await source.read_once()
    assert values[0].quality is Quality.BAD and values[0].value is None
    (failed,) = events(logs, "modbus.read_failed")
    assert "exception 11" in failed["error"] and "unit id" in failed["hint"] and failed["unit"] == 9


async def test_nothing_listening_is_retried_with_a_hint_and_cancel_is_prompt() -> None:
    source = ModbusSource("lathes", config(free_port()), counters(("M1", 100)), Collector())
    with capture_logs() as logs:
        task = asyncio.create_task(source.run())
        await asyncio.sleep(0.4)
        began = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert time.monotonic() - began < 0.2
    lost = events(logs, "modbus.disconnected")
    assert len(lost) >= 2 and "refused" in lost[0]["error"] and "host and port" in lost[0]["hint"]
    assert not source.health.connected
