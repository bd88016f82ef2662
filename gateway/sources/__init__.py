"""Sources: one folder per protocol (``opcua/``, ``modbus/``, each with
a README: sample configuration and field lessons), and ``build_sources``, the one place that makes them.

``build_sources(mapping, on_batch)`` turns the mapping's sources into running-ready
source objects (OPC UA or Modbus TCP) with the tags of their machines; the service runs
whatever it returns and never learns a protocol. A source with no machine is left out.

The protocol modules are imported when a source of theirs is built, so that importing
this package (e.g. ``modbus.registers`` from the mapping checks) does not load every
protocol library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gateway.mapping.model import (
    CounterTag,
    Mapping,
    ModbusCounterTag,
    ModbusOrderTag,
    ModbusStateTag,
    OrderTag,
    StateTag,
)
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, STATE_ROLE, Source, TagSpec, TagValue
from gateway.sources.modbus.registers import ModbusTag

__all__ = ["build_sources", "modbus_tags", "opcua_tags"]


def build_sources(mapping: Mapping, on_batch: Callable[[list[TagValue]], None]) -> list[Source]:
    """One source per mapping source that has machines, each with its machines' tags."""
    sources: list[Source] = []
    for name, config in mapping.sources.items():
        if config.opcua is not None:
            specs = opcua_tags(mapping, name)
            if specs:
                from gateway.pki import Pki
                from gateway.sources.opcua.source import OpcUaSource

                # The PKI folder is next to the mapping file once loaded (default `pki`).
                sources.append(OpcUaSource(name, config.opcua, specs, on_batch, pki=Pki(mapping.pki or "pki"),
                                           application_uri=mapping.application_uri))
        elif config.modbus is not None:
            tags = modbus_tags(mapping, name)
            if tags:
                from gateway.sources.modbus.source import ModbusSource

                sources.append(ModbusSource(name, config.modbus, tags, on_batch))
    return sources


def opcua_tags(mapping: Mapping, source: str) -> list[TagSpec]:
    """The tags of the machines on OPC UA source ``source``, counters before the order tag."""
    return [TagSpec(machine, role, _expect(tag, (CounterTag, OrderTag, StateTag), machine, source).node)
            for machine, role, tag in _tags(mapping, source)]


def modbus_tags(mapping: Mapping, source: str) -> list[ModbusTag]:
    """The tags of the machines on Modbus source ``source``, counters before the order tag."""
    tags = []
    for machine, role, tag in _tags(mapping, source):
        t = _expect(tag, (ModbusCounterTag, ModbusOrderTag, ModbusStateTag), machine, source)
        length = t.length if isinstance(t, ModbusOrderTag) else None
        tags.append(ModbusTag(machine, role, t.register, t.type, t.table, length,
                              word_order=t.word_order, byte_order=t.byte_order))
    return tags


def _tags(mapping: Mapping, source: str) -> Iterator[tuple[str, str, object]]:
    """(machine, role, tag) of every machine on ``source``: its serial tag, its counters, then its order tag.

    The serial first: a unit's serial is written before the counter that counts it, and a
    poll that reads both hands the serial to the service first."""
    for name, machine in mapping.machines.items():
        if machine.source != source:
            continue
        if machine.serial is not None:
            yield name, SERIAL_ROLE, machine.serial
        for role, tag in machine.counters:
            if tag is not None:
                yield name, role, tag
        if not isinstance(machine.order, str):
            yield name, ORDER_ROLE, machine.order
        if machine.count_when is not None:
            yield name, STATE_ROLE, machine.count_when


def _expect(tag: object, kind: tuple[type, ...], machine: str, source: str):  # noqa: ANN202 - narrows to `kind`
    # load_mapping refuses a tag of the other protocol; a mapping built in code gets here.
    if not isinstance(tag, kind):
        raise ValueError(f"machine {machine}: a {type(tag).__name__} cannot be read from source '{source}'")
    return tag
