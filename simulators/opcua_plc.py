"""A simulated PLC on a real OPC UA server (asyncua), driven by ``MachineModel``s.

What a client sees, in namespace ``urn:backflush-gateway:simulator`` (resolve it with
``nsu=``; its index changes with ``extra_namespaces_first``):

* per machine ``M`` an object ``s=M`` with the variables ``s=M.OrderNumber`` (String),
  ``s=M.GoodCount`` and ``s=M.ScrapCount`` (UInt16/UInt32/UInt64 by counter width) and
  ``s=M.State`` (Int32, PackML: 6 Execute, 5 Suspended); with ``serials``, ``s=M.SerialNumber``
  (String), written per good cycle right before the GoodCount that counts it;
* with ``interfaces``, EUROMAP 77 and PackML nodes too (see ``simulators.standard_interfaces``);
* the method ``s=Sim.Command`` on the object ``s=Sim``:
  ``(machine, command, argument)`` -> JSON text (see ``simulators.commands``); besides
  those commands, ``bad_value`` with ``bad``, ``uncertain``, ``float``, ``string``,
  ``negative`` or ``none`` makes ``s=M.GoodCount`` show a Bad/Uncertain status or a value
  of the wrong type or sign while the machine keeps counting (``none`` ends it).

How values are written, which a subscriber can rely on:

* a tick loop (default every 20 ms) advances the models by the real elapsed time (those
  whose next cycle may have ended: ``SimulatedPlant._advance_models``) and writes only the
  nodes whose value changed (of the machines whose model moved: ``MachineModel.revision``);
* every write carries a SourceTimestamp (UTC) that is strictly greater than the one
  before, across the whole server; within a machine the order tag is written before the
  counters and the counters before the state, so after an order change with a job reset
  the new order number is older than the zeroed counters;
* a command first publishes what was produced up to that instant, then applies, then
  publishes again: when ``pause`` returns, the server shows exactly the truth.

``stop_server`` takes the server off the network while the machines keep counting;
``start_server`` brings a fresh server back on the same port, optionally with another
namespace index, like a PLC that restarts and renumbers its namespaces.

This module is the OPC UA shell around ``simulators.plant`` (which owns the machines,
the monotonic clock and the commands, shared with the Modbus simulator): it owns the
asyncua server. It must never decide a number (that is the model's job), never block the
event loop, and never configure logging except when run as the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import operator
import time
from collections.abc import Callable, Sequence
from copy import copy
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from asyncua import Node, Server, ua

from simulators import standard_interfaces
from simulators.commands import SimCommandError
from simulators.demo import demo_machines
from simulators.machine import MachineModel, SimMachineConfig
from simulators.plant import (
    SimulatedPlant,
    add_machine_arguments,
    machines_from_args,
    parse_machine_spec,
    run_cli,
)

NAMESPACE_URI = "urn:backflush-gateway:simulator"
PADDING_NAMESPACE_URI = NAMESPACE_URI + ":padding:{}"
COMMAND_OBJECT = "Sim"
COMMAND_METHOD = "Sim.Command"

_COUNTER_VARIANTS = {16: ua.VariantType.UInt16, 32: ua.VariantType.UInt32, 64: ua.VariantType.UInt64}
# ``bad_value`` command: what the GoodCount node shows instead of the count, as a
# misconfigured or failing PLC would (the model keeps counting; "none" shows it again).
FAULT_TAG = "GoodCount"
SERIAL_TAG = "SerialNumber"  # machines started with serials: the serial of each good cycle
BAD_VALUES: dict[str, tuple[ua.Variant, int]] = {
    "bad": (ua.Variant(None, ua.VariantType.Null), ua.StatusCodes.BadSensorFailure),
    "uncertain": (ua.Variant(0, ua.VariantType.UInt32), ua.StatusCodes.UncertainLastUsableValue),
    "float": (ua.Variant(1234.5, ua.VariantType.Double), ua.StatusCodes.Good),
    "string": (ua.Variant("1234", ua.VariantType.String), ua.StatusCodes.Good),
    "negative": (ua.Variant(-5, ua.VariantType.Int32), ua.StatusCodes.Good),
}
_HEARTBEAT_S = 1.0  # how often ServerStatus/CurrentTime moves, as on asyncua's own clock

__all__ = [
    "NAMESPACE_URI",
    "OpcUaPlc",
    "demo_machines",
    "node_id",
    "parse_machine_spec",
]


def node_id(machine: str, tag: str) -> str:
    """The NodeId text a mapping uses for one tag, e.g. ``node_id("PRESS-01", "GoodCount")``."""
    return f"nsu={NAMESPACE_URI};s={machine}.{tag}"


class _Stamps:
    """UTC source timestamps that strictly increase, so that sorting a subscription's
    notifications by SourceTimestamp restores the order in which values were written."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=timezone.utc)

    def next(self) -> datetime:
        # datetime has microsecond resolution; two writes in the same microsecond must
        # still be told apart.
        self._last = max(datetime.now(timezone.utc), self._last + timedelta(microseconds=1))
        return self._last


@dataclass(frozen=True)
class _Tag:
    name: str
    variant: ua.VariantType
    read: Callable[[MachineModel], object]


def _machine_tags(width_bits: int, interfaces: tuple[str, ...] = (), serials: bool = False) -> tuple[_Tag, ...]:
    counter = _COUNTER_VARIANTS[width_bits]
    orders, counters, states = (tuple(_Tag(*n) for n in group) for group in standard_interfaces.nodes(interfaces))
    serial = (_Tag(SERIAL_TAG, ua.VariantType.String, operator.attrgetter("serial")),) if serials else ()
    # Write order matters: the order tag before the counters it explains, a serial before its count.
    return (
        _Tag("OrderNumber", ua.VariantType.String, operator.attrgetter("order")), *orders, *serial,
        _Tag("GoodCount", counter, operator.attrgetter("good_count")),
        _Tag("ScrapCount", counter, operator.attrgetter("scrap_count")), *counters,
        _Tag("State", ua.VariantType.Int32, operator.attrgetter("state")), *states,
    )


class _MachineNodes:
    """One machine's variables on one server instance, and what was last written there."""

    def __init__(self, model: MachineModel, node_ids: Sequence[tuple[_Tag, ua.NodeId]]) -> None:
        self._model = model
        self._node_ids = node_ids
        self._written: dict[str, object] = {}
        self._shown: tuple[int, str | None] | None = None  # the model's revision and the fault written

    @property
    def name(self) -> str:
        return self._model.name

    def has_news(self, fault: str | None) -> bool:
        """Whether the model or its fault changed since the last ``publish``: if not, it writes nothing."""
        return (self._model.revision, fault) != self._shown

    async def publish(self, server: Server, stamps: _Stamps, fault: str | None = None) -> None:
        shown = (self._model.revision, fault)
        await self._publish_serials(server, stamps)
        for tag, nid in self._node_ids:
            value = tag.read(self._model)
            if tag.name == FAULT_TAG and fault is not None:
                value = ("fault", fault)  # compared like a value: written once per fault
            if tag.name in self._written and self._written[tag.name] == value:
                continue  # unchanged values are not written: no notification without news
            if tag.name == FAULT_TAG and (isinstance(value, tuple) or isinstance(self._written.get(tag.name), tuple)):
                await _retype(server, nid, BAD_VALUES[fault][0].VariantType if isinstance(value, tuple) else tag.variant,
                              stamps)
            stamp = stamps.next()
            if isinstance(value, tuple):
                variant, status = BAD_VALUES[fault]
                data = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=stamp,
                                    ServerTimestamp=stamp)
            else:
                data = ua.DataValue(ua.Variant(value, tag.variant), SourceTimestamp=stamp, ServerTimestamp=stamp)
            await server.write_attribute_value(nid, data)
            self._written[tag.name] = value
        self._shown = shown

    async def _publish_serials(self, server: Server, stamps: _Stamps) -> None:
        """Each good cycle of a machine with serials: its serial, then the good count that counts it."""
        nodes = {tag.name: (tag, nid) for tag, nid in self._node_ids}
        for serial, good in self._model.serial_events():
            writes = ([(SERIAL_TAG, serial)] if serial is not None else []) + [("GoodCount", good)]
            for name, value in writes:
                tag, nid = nodes[name]
                stamp = stamps.next()
                await server.write_attribute_value(nid, ua.DataValue(ua.Variant(value, tag.variant),
                                                                     SourceTimestamp=stamp, ServerTimestamp=stamp))
                self._written[name] = value


async def _retype(server: Server, nid: ua.NodeId, variant: ua.VariantType, stamps: _Stamps) -> None:
    """Let ``nid`` take values of ``variant``, as a PLC program change retyping the tag does.

    asyncua refuses a value of another type than the node's; it accepts one after a Bad
    status emptied the node and the DataType was changed. Clients see that Bad status
    first (and ignore it, as they must).
    """
    bad = ua.DataValue(None, StatusCode=ua.StatusCode(ua.StatusCodes.BadConfigurationError),
                       SourceTimestamp=stamps.next())
    await server.write_attribute_value(nid, bad)
    # Built-in variant types 1..25 are the DataType node ids i=1..25; Null has no DataType.
    data_type = ua.NodeId(variant.value if variant is not ua.VariantType.Null else ua.ObjectIds.BaseDataType, 0)
    if variant in (ua.VariantType.Double, ua.VariantType.String, ua.VariantType.Int32):
        data_type = ua.NodeId(ua.ObjectIds.Number, 0)  # not a built-in id: asyncua then trusts the first write
    await server.write_attribute_value(nid, ua.DataValue(ua.Variant(data_type, ua.VariantType.NodeId)),
                                       ua.AttributeIds.DataType)


async def _add_machine(parent: Node, idx: int, model: MachineModel, interfaces: tuple[str, ...] = ()) -> _MachineNodes:
    machine = await parent.add_object(ua.NodeId(model.name, idx), ua.QualifiedName(model.name, idx))
    node_ids = []
    for tag in _machine_tags(model.config.width_bits, interfaces, model.config.serials):
        nid = ua.NodeId(f"{model.name}.{tag.name}", idx)
        await machine.add_variable(nid, ua.QualifiedName(tag.name, idx), tag.read(model), tag.variant)
        node_ids.append((tag, nid))
    return _MachineNodes(model, node_ids)


async def _new_server(endpoint: str) -> Server:
    """An initialised asyncua server, not yet listening.

    ``init`` builds the standard address space (~1 s of CPU); asyncua 2.1 has no way
    to skip it, and its shelf cache loads slower than building anew.
    """
    server = Server()
    server.set_server_name("Backflush Gateway simulated PLC")
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    # Anonymous only: offering certificate/username tokens without a signing policy
    # makes asyncua warn on every start.
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    # asyncua's clock task sleeps 1 s between beats and stop() waits for it; we beat
    # ServerStatus/CurrentTime from our tick loop instead, so stop() is immediate.
    server.disable_clock()
    await server.init()
    return server


async def _register_namespaces(server: Server, extra_first: int) -> int:
    for i in range(extra_first):
        await server.register_namespace(PADDING_NAMESPACE_URI.format(i))
    return await server.register_namespace(NAMESPACE_URI)


class OpcUaPlc(SimulatedPlant):
    """Simulated machines served over OPC UA; see the module docstring for the contract."""

    def __init__(
        self,
        machines: Sequence[SimMachineConfig],
        host: str = "127.0.0.1",
        port: int = 4840,
        tick_s: float = 0.02,
        extra_namespaces_first: int = 0,
        interfaces: Sequence[str] = (),
    ) -> None:
        super().__init__(machines, tick_s)
        self.interfaces = tuple(interfaces)  # standard address spaces besides our own
        standard_interfaces.nodes(self.interfaces)  # refuses an unknown one now, not at start
        self.host = host
        self.port = port
        self.extra_namespaces_first = extra_namespaces_first
        self._stamps = _Stamps()
        self._server: Server | None = None
        self._machine_nodes: list[_MachineNodes] = []
        self._namespace_index: int | None = None
        self._prepared: asyncio.Task[Server] | None = None
        self._last_beat = 0.0
        self._faults: dict[str, str] = {}  # machine -> BAD_VALUES key shown on its GoodCount

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def namespace_index(self) -> int | None:
        """Our namespace's index on the running server; None while it is stopped."""
        return self._namespace_index

    @property
    def serving(self) -> bool:
        return self._server is not None

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start counting and serving."""
        if self.ticking:
            raise RuntimeError("simulated PLC already started")
        # Build the server first so the machines start counting when it comes up,
        # not while asyncua builds its address space.
        if self._prepared is None:
            self._prepared = asyncio.create_task(_new_server(self.endpoint), name="opcua-plc-prepare")
        await self._prepared  # start_server takes the built server from there
        self._reset_clock()
        await self.start_server()
        self._start_ticking()

    async def stop(self) -> None:
        """Stop counting and serving; the models keep their state for inspection."""
        await self._stop_ticking()
        await self._take_down()
        if self._prepared is not None:
            self._prepared.cancel()
            await asyncio.gather(self._prepared, return_exceptions=True)
            self._prepared = None

    async def stop_server(self) -> None:
        """Take the server off the network (clients lose their sessions); machines keep counting."""
        await self._take_down()
        if self._prepared is None:
            # Build the next server's address space while this one is down, so that
            # start_server is quick (a test's "outage" hides the init time).
            self._prepared = asyncio.create_task(_new_server(self.endpoint), name="opcua-plc-prepare")

    async def _take_down(self) -> None:
        async with self._lock:
            server, self._server = self._server, None
            self._machine_nodes, self._namespace_index = [], None
        if server is not None:
            # Outside the lock: stopping waits for in-flight requests, and a Sim.Command
            # in flight needs the lock to finish.
            await server.stop()

    async def start_server(self, extra_namespaces_first: int | None = None) -> None:
        """Serve again on the same port; ``extra_namespaces_first`` moves our namespace index."""
        if self._server is not None:
            raise RuntimeError("the simulated PLC's server is already running")
        if extra_namespaces_first is not None:
            self.extra_namespaces_first = extra_namespaces_first
        prepared, self._prepared = self._prepared, None
        server = await (prepared or _new_server(self.endpoint))
        async with self._lock:
            idx = await _register_namespaces(server, self.extra_namespaces_first)
            machine_nodes = await self._add_address_space(server, idx)
            # The values must be current before the first client can read them.
            self._advance_models()
            await self._publish_to(server, machine_nodes)
            self._last_beat = 0.0
            await self._beat(server)  # CurrentTime is never empty once clients connect
            await server.start()
            self._server, self._machine_nodes, self._namespace_index = server, machine_nodes, idx

    async def _add_address_space(self, server: Server, idx: int) -> list[_MachineNodes]:
        objects = server.nodes.objects
        machine_nodes = [await _add_machine(objects, idx, model, self.interfaces) for model in self.models.values()]
        sim = await objects.add_object(ua.NodeId(COMMAND_OBJECT, idx), ua.QualifiedName(COMMAND_OBJECT, idx))
        arguments = [_string_argument(name) for name in ("machine", "command", "argument")]
        await sim.add_method(
            ua.NodeId(COMMAND_METHOD, idx),
            ua.QualifiedName("Command", idx),
            self._on_command,
            arguments,
            [_string_argument("result")],
        )
        return machine_nodes

    # --- counting ------------------------------------------------------------------

    async def _publish(self) -> None:
        if self._server is not None:
            await self._publish_to(self._server, self._machine_nodes)
            await self._beat(self._server)

    async def _publish_to(self, server: Server, machine_nodes: Sequence[_MachineNodes]) -> None:
        faults = self._faults
        for nodes in machine_nodes:
            fault = faults.get(nodes.name)
            if nodes.has_news(fault):
                await nodes.publish(server, self._stamps, fault)

    async def _beat(self, server: Server) -> None:
        """Move ServerStatus/CurrentTime (i=2258), the heartbeat clients watch."""
        now = time.monotonic()
        if now - self._last_beat < _HEARTBEAT_S:
            return
        self._last_beat = now
        stamp = datetime.now(timezone.utc)
        status_node = server.get_node(ua.ObjectIds.Server_ServerStatus)
        status = copy(await status_node.read_value())
        status.CurrentTime = stamp
        await status_node.write_value(status)
        await server.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).write_value(stamp)

    # --- control -------------------------------------------------------------------

    async def bad_value(self, machine: str, kind: str) -> dict:
        """Show ``kind`` (see ``BAD_VALUES``) on ``machine``'s GoodCount; "none" shows the count again.

        The machine keeps counting meanwhile; returns the truth like every command.
        """
        kind = kind.strip()
        if kind != "none" and kind not in BAD_VALUES:
            raise SimCommandError(f"bad_value: expected one of {', '.join([*BAD_VALUES, 'none'])}, got {kind!r}")
        if machine not in self.models:
            raise SimCommandError(f"unknown machine {machine!r}")
        async with self._lock:
            await self._advance_and_publish()
            if kind == "none":
                self._faults.pop(machine, None)
            else:
                self._faults[machine] = kind
            await self._publish()
            return self.models[machine].truth()

    async def _on_command(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
        if len(args) < 3:
            return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
        if len(args) > 3:
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        machine, command, argument = (str(arg.Value or "") for arg in args)
        try:
            if command.strip() == "bad_value":
                result = await self.bad_value(machine, argument)
            else:
                result = await self.command(machine, command, argument)
        except SimCommandError as exc:
            # A Bad status would lose the message; clients get it as {"error": ...}.
            result = {"error": str(exc)}
        return [ua.Variant(json.dumps(result), ua.VariantType.String)]


def _string_argument(name: str) -> ua.Argument:
    argument = ua.Argument()
    argument.Name = name
    argument.DataType = ua.NodeId(ua.ObjectIds.String)
    argument.ValueRank = -1  # a scalar
    return argument


# --- CLI -------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.opcua_plc",
        description="Simulated PLC: machines counting cycles on an OPC UA server.",
    )
    add_machine_arguments(parser, port=4840, demo_help="add the demo plant's three OPC UA machines")
    parser.add_argument("--interface", action="append", default=[], choices=standard_interfaces.INTERFACES,
                        help="also serve this standard address space for every machine (repeatable)")
    args = parser.parse_args(argv)
    args.machines = machines_from_args(parser, args, demo_machines)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)

    def serving(plc: OpcUaPlc, took_s: float) -> str:
        return (f"simulated PLC serving {', '.join(plc.models)} on {plc.endpoint} "
                f"(namespace {NAMESPACE_URI}) after {took_s:.2f} s")

    build = functools.partial(OpcUaPlc, args.machines, host=args.host, port=args.port, tick_s=args.tick,
                              interfaces=tuple(args.interface))
    return run_cli(build, serving, f"opc.tcp://{args.host}:{args.port}")


if __name__ == "__main__":
    raise SystemExit(main())
