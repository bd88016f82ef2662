"""A simulated PLC on a real Modbus TCP server (pymodbus), driven by ``MachineModel``s.

The same machines as the OPC UA simulator, the same clock, commands and ground truth
(``simulators.plant``); only the way values are shown differs. Machine number ``n`` (its
1-based position in the list) has its registers from ``base = stride × n`` (stride 100 by
default, at least 20) on its unit:

==========  ===========  ======================================================
register    tag          type
==========  ===========  ======================================================
base + 0    GoodCount    uint16 / uint32 / uint64 by counter width (slot of 4)
base + 4    ScrapCount   the same
base + 8    State        uint16, PackML StateCurrent: 6 Execute, 5 Suspended
base + 10   OrderNumber  string, 10 registers (20 characters)
==========  ===========  ======================================================

in the holding registers and, identical, in the input registers; coil ``n`` and discrete
input ``n`` say "producing" (State is Execute). The registers from one machine's base to
the next read as 0, as in a PLC's register area; with ``sparse=True`` only the 20 used
ones exist and any other address answers exception 2 (illegal data address), as devices
with a sparse register map do. ``machine_layout`` returns this layout as ``RegisterTag``s,
so mappings, tests and the benchmark derive their addresses from it.
Numbers follow the simulator's ``word_order``/``byte_order``, strings its ``byte_order``,
encoded by the simulator's own codec (``simulators.modbus_codec``), never the gateway's.

How values change, which a poller can rely on: a tick loop (default every 20 ms)
advances every model by the real elapsed time and writes the changed registers, all of
one machine together; a read is answered from the tables as they are at that instant,
so one read of a machine's block never mixes two ticks. A command first publishes what
was produced up to that instant, then applies, then publishes again.

Control: ``command(machine, cmd, arg)`` as for OPC UA, in-process or over the JSON
control channel on ``control_port`` (``simulators.json_control``), which also takes the
Modbus fault command ``fault`` with ``busy``, ``illegal_address``, ``device_failure``,
``timeout`` (no answer) or ``none``: reads touching that machine's registers get that
answer. ``stop_server``/``start_server`` take the server off the network and back while
the machines keep counting.

It must never decide a number (the model's job), never block the event loop, and never
configure logging except when run as the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import Mapping, Sequence

from simulators.commands import ALL_MACHINES, SimCommandError
from simulators.demo import DEMO_MODBUS_PORT, demo_modbus_machines
from simulators.json_control import serve_json_commands
from simulators.machine import MachineModel, SimMachineConfig
from simulators.modbus_codec import RegisterTag
from simulators.modbus_server import Fault, ModbusServer, ModbusUnit
from simulators.plant import SimulatedPlant, add_machine_arguments, machines_from_args, run_cli

__all__ = ["MACHINE_REGISTERS", "ModbusPlc", "ORDER_CHARACTERS", "machine_layout"]

MACHINE_REGISTERS = 20  # registers one machine occupies from its base
ORDER_REGISTERS = 10
ORDER_CHARACTERS = 2 * ORDER_REGISTERS
FAULTS = {"none": None, **{f.value: f for f in Fault}}


def machine_layout(
    machine: str, position: int, *, width_bits: int = 32, stride: int = 100,
    word_order: str = "big", byte_order: str = "big",
) -> dict[str, RegisterTag]:
    """Where machine number ``position`` (1-based) keeps its tags, in holding registers.

    The keys are the tag names (GoodCount, ScrapCount, State, OrderNumber); each tag's
    ``role`` is its name too. Input registers hold the same at the same addresses.
    """
    if position < 1 or stride < MACHINE_REGISTERS:
        raise ValueError(f"need position >= 1 and stride >= {MACHINE_REGISTERS}, got {position} and {stride}")
    base = stride * position
    tag = functools.partial(RegisterTag, machine, word_order=word_order, byte_order=byte_order)
    counter = f"uint{width_bits}"
    return {
        "GoodCount": tag("GoodCount", base, counter),
        "ScrapCount": tag("ScrapCount", base + 4, counter),
        "State": tag("State", base + 8, "uint16"),
        "OrderNumber": tag("OrderNumber", base + 10, "string", length=ORDER_REGISTERS),
    }


class _Machine:
    """One machine's place on its unit, and what was last written there."""

    def __init__(self, model: MachineModel, position: int, unit: ModbusUnit, layout: dict[str, RegisterTag],
                 stride: int) -> None:
        self.model, self.position, self.unit, self.layout = model, position, unit, layout
        self.base = layout["GoodCount"].register
        self.area = range(self.base, min(self.base + stride, 65_536))  # up to the next machine's base
        self._written: dict[str, object] = {}

    @property
    def registers(self) -> range:
        return range(self.base, self.base + MACHINE_REGISTERS)

    def publish(self) -> None:
        model = self.model
        # All of one machine in one go, with no await in between: a read is served
        # either before or after, never in the middle.
        values = {"OrderNumber": model.order, "GoodCount": model.good_count,
                  "ScrapCount": model.scrap_count, "State": model.state}
        for name, value in values.items():
            if self._written.get(name, object()) == value:
                continue
            registers = self.layout[name].encode(value)
            self.unit.write("holding", self.layout[name].register, registers)
            self.unit.write("input", self.layout[name].register, registers)
            self._written[name] = value
        producing = not model.paused
        self.unit.write("coil", self.position, [producing])
        self.unit.write("discrete_input", self.position, [producing])


class ModbusPlc(SimulatedPlant):
    """Simulated machines served over Modbus TCP; see the module docstring for the contract."""

    def __init__(
        self,
        machines: Sequence[SimMachineConfig],
        host: str = "127.0.0.1",
        port: int = DEMO_MODBUS_PORT,
        tick_s: float = 0.02,
        *,
        units: Mapping[str, int] | None = None,
        stride: int = 100,
        word_order: str = "big",
        byte_order: str = "big",
        sparse: bool = False,
        control_port: int | None = None,
    ) -> None:
        super().__init__(machines, tick_s)
        self.host, self.port, self.control_port = host, port, control_port
        if stride * len(machines) + MACHINE_REGISTERS > 65_536:
            raise ValueError(f"{len(machines)} machines at a stride of {stride} do not fit in 65536 registers")
        unit_of = {config.name: (units or {}).get(config.name, 1) for config in machines}
        unknown = set(units or {}) - set(unit_of)
        if unknown:
            raise ValueError(f"units given for machines that are not simulated: {', '.join(sorted(unknown))}")
        self.unit_of = unit_of
        self._units: dict[int, ModbusUnit] = {}
        self._machines: dict[str, _Machine] = {}
        for position, config in enumerate(machines, start=1):
            if len(config.order) > ORDER_CHARACTERS:
                raise ValueError(f"{config.name}: order {config.order!r} is longer than {ORDER_CHARACTERS} characters")
            layout = machine_layout(config.name, position, width_bits=config.width_bits, stride=stride,
                                    word_order=word_order, byte_order=byte_order)
            unit = self._units.setdefault(unit_of[config.name], ModbusUnit(unit_of[config.name], {}))
            machine = _Machine(self.models[config.name], position, unit, layout, stride)
            for table in ("holding", "input"):
                unit.ranges.setdefault(table, []).append(machine.registers if sparse else machine.area)
            for table in ("coil", "discrete_input"):
                unit.ranges.setdefault(table, []).append(range(position, position + 1))
            self._machines[config.name] = machine
        self._server = ModbusServer(list(self._units.values()), host, port)
        self._control: asyncio.Server | None = None

    def layout(self, machine: str) -> dict[str, RegisterTag]:
        """Where ``machine``'s tags are (holding registers; see ``machine_layout``)."""
        return self._machines[machine].layout

    def unit(self, machine: str) -> ModbusUnit:
        """The unit serving ``machine``: its tables, request count and faults."""
        return self._machines[machine].unit

    @property
    def serving(self) -> bool:
        return self._server.serving

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.ticking:
            raise RuntimeError("simulated PLC already started")
        self._reset_clock()
        await self.start_server()
        if self.control_port is not None:
            self._control = await serve_json_commands(self._on_control, self.host, self.control_port)
        self._start_ticking()

    async def stop(self) -> None:
        await self._stop_ticking()
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            self._control = None
        await self.stop_server()

    async def stop_server(self) -> None:
        """Take the Modbus server off the network (connections drop); machines keep counting."""
        await self._server.stop()

    async def start_server(self) -> None:
        """Serve again on the same port, with the values of this instant."""
        async with self._lock:
            # The values must be current before the first client can read them.
            await self._advance_and_publish()
            await self._server.start()

    async def _publish(self) -> None:
        for machine in self._machines.values():
            machine.publish()

    # --- control -------------------------------------------------------------------

    async def command(self, machine: str, command: str, argument: str = "") -> dict:
        if command.strip() == "set_order" and len(argument.partition(",")[0].strip()) > ORDER_CHARACTERS:
            raise SimCommandError(f"set_order: the order register holds at most {ORDER_CHARACTERS} characters")
        return await super().command(machine, command, argument)

    async def fault(self, machine: str, fault: str) -> dict:
        """Answer reads of ``machine``'s registers with ``fault`` (see ``FAULTS``); "none" clears.

        Returns the truth afterwards, like every command ({machine: truth} for "*").
        """
        if fault.strip() not in FAULTS:
            raise SimCommandError(f"fault: expected one of {', '.join(FAULTS)}, got {fault!r}")
        names = list(self._machines) if machine == ALL_MACHINES else [machine]
        if any(name not in self._machines for name in names):
            raise SimCommandError(f"unknown machine {machine!r}; known: {', '.join(self._machines)}")
        for name in names:
            self._set_fault(self._machines[name], FAULTS[fault.strip()])
        return await self.command(machine, "truth")

    def _set_fault(self, machine: _Machine, fault: Fault | None) -> None:
        name = machine.model.name
        machine.unit.clear_faults(owner=name)
        if fault is None:
            self._server.release_held()
            return
        for table in ("holding", "input"):
            machine.unit.set_fault(fault, table, machine.registers, owner=name)
        for table in ("coil", "discrete_input"):
            machine.unit.set_fault(fault, table, range(machine.position, machine.position + 1), owner=name)

    async def _on_control(self, machine: str, command: str, argument: str) -> dict:
        if command.strip() == "fault":
            return await self.fault(machine, argument)
        return await self.command(machine, command, argument)


# --- CLI -------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.modbus_plc",
        description="Simulated PLC: machines counting cycles in the registers of a Modbus TCP server.",
    )
    add_machine_arguments(parser, port=DEMO_MODBUS_PORT, demo_help="add the demo plant's Modbus machine")
    parser.add_argument("--control-port", type=int, default=None,
                        help="port of the JSON control channel (commands and truth); none if not given")
    parser.add_argument("--unit", type=int, default=1, help="unit id of every machine")
    parser.add_argument("--stride", type=int, default=100, help="registers from one machine's base to the next")
    parser.add_argument("--sparse", action="store_true",
                        help="only the used registers exist (reading between machines answers exception 2)")
    parser.add_argument("--word-order", choices=("big", "little"), default="big")
    parser.add_argument("--byte-order", choices=("big", "little"), default="big")
    args = parser.parse_args(argv)
    args.machines = machines_from_args(parser, args, demo_modbus_machines)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)

    def serving(plc: ModbusPlc, took_s: float) -> str:
        where = ", ".join(f"{name} at {plc.layout(name)['GoodCount'].register}" for name in plc.models)
        control = f", control on port {plc.control_port}" if plc.control_port is not None else ""
        return (f"simulated PLC serving {where} on modbus {plc.host}:{plc.port} unit {args.unit}"
                f"{control} after {took_s:.2f} s")

    build = functools.partial(
        ModbusPlc, args.machines, host=args.host, port=args.port, tick_s=args.tick,
        units={m.name: args.unit for m in args.machines}, stride=args.stride,
        word_order=args.word_order, byte_order=args.byte_order, sparse=args.sparse, control_port=args.control_port,
    )
    return run_cli(build, serving, f"{args.host}:{args.port}")


if __name__ == "__main__":
    raise SystemExit(main())
