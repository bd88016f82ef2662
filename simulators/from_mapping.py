"""A simulated plant built from a mapping file: exactly the tags the mapping names.

``MappingPlc`` serves, for every OPC UA source of the mapping, an OPC UA server at its
endpoint's port with the mapping's node ids (every ``nsu=`` namespace registered, every
``ns=<index>`` made to exist), counters typed UInt16/UInt32/UInt64 by their ``type``, the
order tag as a String and a ``count_when`` state tag as an Int32; and, for every Modbus
source, a Modbus TCP server at its host and port with the source's unit id, each tag in its
table at its registers, encoded with its type, word and byte order (an order string in its
``length``) by the simulator's own codec (``simulators.modbus_codec``), so that the
gateway's decoding is tested, not mirrored. Sources that share an endpoint (or a host and
port) share one server.

Behind the tags are the simulators' machine models (``simulators.machine``): one per mapped
machine, counting at ``rate_hz`` cycles per second with the machine's units per cycle and
its counters' width, with the ground truth and the fault commands every simulator has
(``simulators.commands``: ``pause``, ``reset``, ``jump_near_rollover``, ``set_order``, …),
through the ``Sim.Command`` method on every OPC UA server (namespace
``urn:backflush-gateway:simulator``) and, with ``control_port``, the JSON control channel.
Each machine runs the order the mapping fixes for it, else the one given in ``orders``,
else the first released order of the master data whose routing runs the machine's
operation on its work center. A machine's state tag shows the first state its
``count_when`` allows while the model produces, and the smallest whole number ≥ 0 it does
not allow while the model is paused.

With ``replay`` (a ``gateway.commissioning.recording.Replay``) the tags show a recording's
values instead, at the recorded pace from the start; values of bad or uncertain quality are
not shown (the gateway ignores them anyway). The models then do not count.

Like the other simulators, it never decides a number (the models do) and never blocks the
event loop; it serves what it is given and reads no file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import Server, ua

from gateway.mapping.model import COUNTER_WIDTH_BITS, CounterTag, Mapping, ModbusCounterTag, ModbusOrderTag
from gateway.sources import modbus_tags, opcua_tags
from gateway.sources.base import ORDER_ROLE, STATE_ROLE
from simulators.commands import SimCommandError
from simulators.json_control import serve_json_commands
from simulators.machine import MachineModel, SimMachineConfig
from simulators.modbus_codec import RegisterTag, encode
from simulators.modbus_server import ModbusServer, ModbusUnit
from simulators.opcua_plc import (
    COMMAND_METHOD,
    COMMAND_OBJECT,
    NAMESPACE_URI,
    _new_server,
    _Stamps,
    _string_argument,
)
from simulators.plant import SimulatedPlant

__all__ = ["MappingPlc", "machine_configs", "order_for", "state_value"]

_COUNTER_VARIANTS = {16: ua.VariantType.UInt16, 32: ua.VariantType.UInt32, 64: ua.VariantType.UInt64}
_PADDING_URI = NAMESPACE_URI + ":index:{}"


def _value(model: MachineModel, role: str) -> object:
    if role == ORDER_ROLE:
        return model.order
    if role == "total":  # every part, good and bad: the two counters' sum at the counters' width
        return (model.good_count + model.scrap_count) % model.config.modulus
    return model.good_count if role == "good" else model.scrap_count


def state_value(allowed: list[int], producing: bool) -> int:
    """What a simulated machine's ``count_when`` tag shows: an allowed state while it
    produces, the smallest whole number ≥ 0 not allowed while it does not."""
    if producing:
        return allowed[0]
    return next(n for n in range(len(allowed) + 1) if n not in allowed)


def order_for(mapping: Mapping, machine: str, masterdata=None) -> str:
    """The order a simulated machine runs: the mapping's fixed one, else the first released
    order of ``masterdata`` whose routing runs the machine's operation on its work center."""
    config = mapping.machines[machine]
    if isinstance(config.order, str):
        return config.order
    if masterdata is not None:
        for number, order in masterdata.orders.items():
            routing = masterdata.routings.get(order.routing_key)
            if routing and any(op.operation == config.operation and op.work_center == config.work_center
                               for op in routing.operations):
                return number
    return ""


def machine_configs(mapping: Mapping, *, rate_hz: float, orders: dict[str, str] | None = None, masterdata=None,
                    scrap_ratio: float = 0.02, paused: bool = False) -> list[SimMachineConfig]:
    """One model per mapped machine: its units per cycle, its counters' width, its order."""
    configs = []
    for i, (name, machine) in enumerate(mapping.machines.items(), start=1):
        counters = [tag for _, tag in machine.counters if tag is not None]
        widths = {COUNTER_WIDTH_BITS[tag.type] for tag in counters}
        if len(widths) > 1:
            raise ValueError(f"{name}: its counters have different widths ({', '.join(t.type for t in counters)}); "
                             "a simulated machine counts all of them with one")
        upc = machine.counters.made.units_per_cycle or machine.units_per_cycle
        configs.append(SimMachineConfig(
            name, rate_hz=rate_hz, units_per_cycle=upc,
            scrap_ratio=scrap_ratio if machine.counters.scrap is not None else 0.0,
            order=(orders or {}).get(name) or order_for(mapping, name, masterdata), width_bits=widths.pop(),
            seed=i, paused=paused))
    return configs


@dataclass
class _OpcUaEndpoint:
    """One OPC UA server: the mapping's nodes of the sources at one endpoint."""

    endpoint: str
    tags: list[tuple[str, str, str, ua.VariantType]]  # machine, role, node id text, variant
    server: Server | None = None
    nodes: dict[tuple[str, str], ua.NodeId] = field(default_factory=dict)
    written: dict[ua.NodeId, object] = field(default_factory=dict)
    variants: dict[ua.NodeId, ua.VariantType] = field(default_factory=dict)

    async def start(self, on_command) -> None:
        server = await _new_server(self.endpoint)
        parsed = [(m, r, ua.NodeId.from_string(text), variant, text) for m, r, text, variant in self.tags]
        # ns=<index> ids need their index to exist: padding namespaces first, then the nsu= ones.
        indexes = [p.NamespaceIndex for _, _, p, _, _ in parsed if not getattr(p, "NamespaceUri", None)]
        if any(i == 0 for i in indexes):
            bad = next(text for _, _, p, _, text in parsed if not getattr(p, "NamespaceUri", None)
                       and p.NamespaceIndex == 0)
            raise ValueError(f"{bad}: namespace 0 is the OPC UA standard's own; a simulated tag cannot live there")
        namespaces = await server.get_namespace_array()
        for i in range(len(namespaces), max(indexes, default=0) + 1):
            await server.register_namespace(_PADDING_URI.format(i))
        objects = server.nodes.objects
        for machine, role, p, variant, text in parsed:
            uri = getattr(p, "NamespaceUri", None)
            idx = await server.register_namespace(uri) if uri else p.NamespaceIndex
            nid = ua.NodeId(p.Identifier, idx, p.NodeIdType)
            if nid not in self.variants:  # one node may serve several machines (a shared order tag)
                initial = "" if variant is ua.VariantType.String else 0
                name = str(p.Identifier).rsplit(".", 1)[-1]
                await objects.add_variable(nid, ua.QualifiedName(name, idx), ua.Variant(initial, variant))
                self.variants[nid] = variant
            self.nodes[(machine, role)] = nid
        idx = await server.register_namespace(NAMESPACE_URI)
        sim = await objects.add_object(ua.NodeId(COMMAND_OBJECT, idx), ua.QualifiedName(COMMAND_OBJECT, idx))
        await sim.add_method(ua.NodeId(COMMAND_METHOD, idx), ua.QualifiedName("Command", idx), on_command,
                             [_string_argument(n) for n in ("machine", "command", "argument")],
                             [_string_argument("result")])
        self.server = server

    async def show(self, machine: str, role: str, value: object, stamps: _Stamps) -> None:
        nid = self.nodes.get((machine, role))
        if nid is None or value is None or self.server is None or self.written.get(nid, object()) == value:
            return
        variant = self.variants[nid]
        value = str(value) if variant is ua.VariantType.String else value
        stamp = stamps.next()
        await self.server.write_attribute_value(
            nid, ua.DataValue(ua.Variant(value, variant), SourceTimestamp=stamp, ServerTimestamp=stamp))
        self.written[nid] = value


@dataclass
class _ModbusEndpoint:
    """One Modbus server at host:port: a unit per unit id, the mapping's registers."""

    host: str
    port: int
    tags: dict[int, list[RegisterTag]]  # unit id → its tags
    units: dict[int, ModbusUnit] = field(default_factory=dict)
    unit_of: dict[tuple[str, str], tuple[int, RegisterTag]] = field(default_factory=dict)
    server: ModbusServer | None = None
    written: dict[tuple[int, RegisterTag], object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for unit_id, tags in self.tags.items():
            ranges: dict[str, list[range]] = {}
            for table in ("holding", "input"):
                mine = [t for t in tags if t.table == table]
                if mine:  # one area from the first tag to the last, as a PLC's register area is
                    ranges[table] = [range(min(t.register for t in mine), max(t.last for t in mine) + 1)]
            self.units[unit_id] = ModbusUnit(unit_id, ranges)
            for tag in tags:
                self.unit_of[(tag.machine, tag.role)] = (unit_id, tag)
        self.server = ModbusServer(list(self.units.values()), self.host, self.port)

    def show(self, machine: str, role: str, value: object) -> None:
        found = self.unit_of.get((machine, role))
        if found is None or value is None or self.written.get(found, object()) == value:
            return
        unit_id, tag = found
        if tag.type != "string":
            value = int(value)  # a numeric order tag: the order number as a number
        self.units[unit_id].write(tag.table, tag.register, tag.encode(value))
        self.written[found] = value


class MappingPlc(SimulatedPlant):
    """The mapping's sources, served; see the module docstring."""

    def __init__(self, mapping: Mapping, machines: Sequence[SimMachineConfig], *, tick_s: float = 0.02,
                 replay=None, control_port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(machines, tick_s)
        self.mapping, self.replay, self.control_port, self.host = mapping, replay, control_port, host
        self._stamps = _Stamps()
        self._control: asyncio.Server | None = None
        self._replaying: asyncio.Task | None = None
        self.opcua: dict[str, _OpcUaEndpoint] = {}
        self.modbus: dict[tuple[str, int], _ModbusEndpoint] = {}
        for name, config in mapping.sources.items():
            if config.opcua is not None:
                endpoint = config.opcua.endpoint
                ep = self.opcua.setdefault(endpoint, _OpcUaEndpoint(endpoint, []))
                for spec in opcua_tags(mapping, name):
                    ep.tags.append((spec.machine, spec.role, spec.address, self._variant(spec.machine, spec.role)))
            else:
                key = (config.modbus.host, config.modbus.port)
                tags = self.modbus[key].tags if key in self.modbus else {}
                tags.setdefault(config.modbus.unit, []).extend(
                    RegisterTag(t.machine, t.role, t.register, t.type, t.table, t.length,
                                word_order=t.word_order, byte_order=t.byte_order) for t in modbus_tags(mapping, name))
                self.modbus[key] = _ModbusEndpoint(key[0], key[1], tags)
        for machine in self.models.values():  # an order a string register cannot hold fails now, not later
            self._check_order(machine.name, machine.order)

    def _variant(self, machine: str, role: str) -> ua.VariantType:
        if role == ORDER_ROLE:
            return ua.VariantType.String
        if role == STATE_ROLE:
            return ua.VariantType.Int32  # as EUROMAP 77 JobStatus and PackML StateCurrent are
        tag = getattr(self.mapping.machines[machine].counters, role)
        assert isinstance(tag, CounterTag | ModbusCounterTag)
        return _COUNTER_VARIANTS[COUNTER_WIDTH_BITS[tag.type]]

    def _check_order(self, machine: str, order: str) -> None:
        tag = self.mapping.machines[machine].order
        if isinstance(tag, ModbusOrderTag):
            try:
                encode(tag.type, order if tag.type == "string" else int(order or 0), length=tag.length,
                       word_order=tag.word_order, byte_order=tag.byte_order)
            except ValueError as exc:
                raise ValueError(f"{machine}: order {order!r} does not fit its order tag: {exc}") from None

    @property
    def endpoints(self) -> list[str]:
        return [*self.opcua, *(f"modbus {h}:{p}" for h, p in self.modbus)]

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.ticking or self._replaying:
            raise RuntimeError("simulated plant already started")
        started: list = []
        try:
            for ep in self.opcua.values():
                await ep.start(self._on_command)
                started.append(ep.server)
            async with self._lock:
                self._reset_clock()
                await self._publish()
            for ep in self.opcua.values():
                await ep.server.start()
            for ep in self.modbus.values():
                await ep.server.start()
                started.append(ep.server)
            if self.control_port is not None:
                self._control = await serve_json_commands(self._on_control, self.host, self.control_port)
        except BaseException:
            for server in started:
                await server.stop()
            raise
        if self.replay is None:
            self._start_ticking()
        else:
            self._replaying = asyncio.create_task(self._play(), name="replay")

    async def stop(self) -> None:
        await self._stop_ticking()
        if self._replaying is not None:
            self._replaying.cancel()
            await asyncio.gather(self._replaying, return_exceptions=True)
            self._replaying = None
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            self._control = None
        for ep in self.opcua.values():
            if ep.server is not None:
                await ep.server.stop()
                ep.server = None
        for ep in self.modbus.values():
            await ep.server.stop()

    # --- what the tags show ----------------------------------------------------------

    async def _publish(self) -> None:
        if self.replay is not None:
            return  # the recording decides what the tags show
        for model in self.models.values():
            # The order and the state before the counters they explain: counts made after a
            # resume are read with the producing state, not before it.
            for role in (ORDER_ROLE, STATE_ROLE, "good", "total", "scrap"):
                await self._show(model.name, role, self._tag_value(model, role))

    def _tag_value(self, model: MachineModel, role: str) -> object:
        if role == STATE_ROLE:
            gate = self.mapping.machines[model.name].count_when
            return None if gate is None else state_value(gate.states, not model.paused)
        return _value(model, role)

    async def _show(self, machine: str, role: str, value: object) -> None:
        for ep in self.opcua.values():
            await ep.show(machine, role, value, self._stamps)
        for mb in self.modbus.values():
            mb.show(machine, role, value)

    async def _play(self) -> None:
        """The recording's values at its pace, measured from the first delivery."""
        from gateway.sources.base import Quality

        batches = self.replay.batches
        if not batches:
            return
        first, began = batches[0][0], time.monotonic()
        for at, values in batches:
            await asyncio.sleep(max(0.0, (at - first).total_seconds() - (time.monotonic() - began)))
            async with self._lock:
                for tv in values:
                    if tv.quality is Quality.GOOD and tv.value is not None:
                        await self._show(tv.machine, tv.role, tv.value)

    # --- control -------------------------------------------------------------------

    async def _on_command(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
        if len(args) != 3:
            return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing if len(args) < 3
                                 else ua.StatusCodes.BadTooManyArguments)
        return [ua.Variant(json.dumps(await self._on_control(*(str(a.Value or "") for a in args))),
                           ua.VariantType.String)]

    async def _on_control(self, machine: str, command: str, argument: str) -> dict:
        try:
            if command.strip() == "set_order":
                number = argument.partition(",")[0].strip()
                for name in (self.models if machine == "*" else [machine]):
                    if name in self.models:
                        self._check_order(name, number)
            return await self.command(machine, command, argument)
        except (SimCommandError, ValueError) as exc:
            return {"error": str(exc)}
