"""A Modbus TCP server over plain register tables, with faults on command.

For: the simulated Modbus PLC (``simulators.modbus_plc``) and the Modbus source tests,
which need exact control over what a device answers: which addresses exist (a read
across a missing one is refused with exception 2, as real devices do), the raw register
contents (to test every data type and byte order), and faults — an exception code or no
answer at all — on one unit or one address range.

The simulators' one door to pymodbus' server API (``SimDevice`` with an ``action`` hook,
pymodbus ≥ 3.16): the hook copies the requested range from our tables into pymodbus' own
just before pymodbus answers, so a read sees one consistent snapshot however the tables
change between requests.

It must never decide a value (callers write the tables), never block the event loop,
and never log except through pymodbus' own logger.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["Fault", "ModbusServer", "ModbusUnit"]

TABLES = ("coil", "discrete_input", "holding", "input")  # the order SimDevice takes them in
_READS = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}  # function code → table
_SIZE = 65_536


class Fault(enum.Enum):
    """What a unit answers instead of the values, while the fault is set."""

    BUSY = "busy"  # exception 6, server device busy
    ILLEGAL_ADDRESS = "illegal_address"  # exception 2
    DEVICE_FAILURE = "device_failure"  # exception 4
    TIMEOUT = "timeout"  # no answer at all


_EXCEPTIONS = {
    Fault.BUSY: ExcCodes.DEVICE_BUSY,
    Fault.ILLEGAL_ADDRESS: ExcCodes.ILLEGAL_ADDRESS,
    Fault.DEVICE_FAILURE: ExcCodes.DEVICE_FAILURE,
}


@dataclass
class _FaultRule:
    fault: Fault
    table: str | None
    addresses: range | None
    owner: str | None  # who set it, so that it can be cleared alone (e.g. a machine's name)

    def hits(self, table: str, first: int, count: int) -> bool:
        if self.table is not None and table != self.table:
            return False
        if self.addresses is None:
            return True
        return first <= self.addresses[-1] and self.addresses[0] <= first + count - 1


@dataclass
class ModbusUnit:
    """One unit id: which address ranges exist per table, and their current values.

    ``ranges`` maps a table (``holding``, ``input``, ``coil``, ``discrete_input``) to
    address ranges; a read touching any other address of that table is refused with
    exception 2 (illegal data address).
    """

    unit_id: int
    ranges: dict[str, list[range]]
    tables: dict[str, list] = field(init=False)
    faults: list[_FaultRule] = field(default_factory=list)
    # Read requests of existing addresses (answered or refused by a fault), in total and
    # per (table, first address): for tests and the benchmark.
    reads: int = 0
    reads_at: Counter[tuple[str, int]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        unknown = set(self.ranges) - set(TABLES)
        if unknown:
            raise ValueError(f"unit {self.unit_id}: unknown tables {sorted(unknown)}; use {', '.join(TABLES)}")
        self.tables = {t: [False if t in ("coil", "discrete_input") else 0] * _SIZE for t in TABLES}

    def write(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Set the values the unit serves from ``address`` on (not a Modbus write)."""
        if not 0 <= address <= address + len(values) <= _SIZE:
            raise ValueError(f"{table} {address}..{address + len(values) - 1} is outside 0..{_SIZE - 1}")
        self.tables[table][address : address + len(values)] = list(values)

    def set_fault(
        self, fault: Fault, table: str | None = None, addresses: range | None = None, *, owner: str | None = None
    ) -> None:
        """Answer reads that touch ``table``/``addresses`` (default: all) with ``fault``."""
        self.faults.append(_FaultRule(fault, table, addresses, owner))

    def clear_faults(self, owner: str | None = None) -> None:
        """Clear the faults ``owner`` set (all of them for None). Requests held by a
        TIMEOUT stay held until ``ModbusServer.release_held`` (or the server stops)."""
        self.faults = [r for r in self.faults if owner is not None and r.owner != owner]

    def _fault(self, table: str, first: int, count: int) -> Fault | None:
        return next((r.fault for r in self.faults if r.hits(table, first, count)), None)

    def _device(self, action) -> SimDevice:
        blocks = []
        for table in TABLES:
            bits = table in ("coil", "discrete_input")
            data = [_block(r, bits=bits) for r in _merged(self.ranges.get(table, ()))]
            # pymodbus needs every table non-empty: an unused one gets a placeholder at the
            # top address, where no test and no plant layout looks.
            blocks.append(data or [_block(range(_SIZE - 1, _SIZE), bits=bits)])
        return SimDevice(self.unit_id, simdata=tuple(blocks), action=functools.partial(action, self))


def _no_such_unit() -> SimDevice:
    """Unit id 0 stands for every id not configured; it answers as a Modbus TCP gateway
    does for a unit it cannot reach (exception 11), on every address."""

    async def unreachable(*_args: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    bits, registers = _block(range(_SIZE), bits=True), _block(range(_SIZE), bits=False)
    return SimDevice(0, simdata=([bits], [bits], [registers], [registers]), action=unreachable)


def _block(addresses: range, *, bits: bool) -> SimData:
    # A list of values, not `count=`: pymodbus 3.16 checks a block by building its
    # registers `count` times over (count² entries), which a large block cannot afford.
    kind = DataType.BITS if bits else DataType.REGISTERS
    return SimData(addresses.start, values=[False if bits else 0] * len(addresses), datatype=kind)


def _merged(ranges: Iterable[range]) -> list[range]:
    """Overlapping or touching ranges as one: pymodbus refuses overlapping blocks."""
    out: list[range] = []
    for r in sorted((r for r in ranges if len(r)), key=lambda r: r.start):
        if out and r.start <= out[-1].stop:
            out[-1] = range(out[-1].start, max(out[-1].stop, r.stop))
        else:
            out.append(r)
    return out


class ModbusServer:
    """Serves ``units`` on ``host:port`` between ``start()`` and ``stop()``; restartable."""

    def __init__(self, units: Sequence[ModbusUnit], host: str = "127.0.0.1", port: int = 502) -> None:
        ids = [u.unit_id for u in units]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"need at least one unit, each id once; got {ids}")
        self.units = {u.unit_id: u for u in units}
        self.host, self.port = host, port
        self._server: ModbusTcpServer | None = None
        # Requests held by a TIMEOUT fault wait on this; set when the fault clears or the
        # server stops, so no held request outlives its server.
        self._release = asyncio.Event()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the Modbus server is already running")
        self._release = asyncio.Event()
        devices = [unit._device(self._action) for unit in self.units.values()]
        if 0 not in self.units:
            devices.append(_no_such_unit())
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus' way of saying the port is taken
            await server.shutdown()
            raise OSError(f"cannot serve Modbus on {self.host}:{self.port}: {exc}") from None
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        self._release.set()
        if server is not None:
            await server.shutdown()

    def release_held(self) -> None:
        """Let go of the requests a TIMEOUT fault holds (they are answered late, with
        exception 6, to whoever still listens); new ones are held while a fault stays."""
        self._release.set()
        self._release = asyncio.Event()

    async def _action(self, unit: ModbusUnit, function_code: int, start_address: int, address: int,
                      count: int, registers: list[int], set_values: list | None) -> ExcCodes | None:
        table = _READS.get(function_code)
        if table is None or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a simulated PLC's tags are read-only
        unit.reads += 1
        unit.reads_at[(table, address)] += 1
        fault = unit._fault(table, address, count)
        if fault is Fault.TIMEOUT:
            await self._release.wait()
            return ExcCodes.DEVICE_BUSY  # if anyone still listens, it is too late anyway
        if fault is not None:
            return _EXCEPTIONS[fault]
        values = unit.tables[table]
        if table in ("coil", "discrete_input"):
            # Bit tables are kept by pymodbus 16 bits to a register, bit 0 first.
            for reg in range(address // 16, (address + count - 1) // 16 + 1):
                bits = values[reg * 16 : reg * 16 + 16]
                registers[reg - start_address] = sum(1 << i for i, bit in enumerate(bits) if bit)
        else:
            offset = address - start_address
            registers[offset : offset + count] = values[address : address + count]
        return None
