"""The recording file: what the sources delivered, one JSON line per value, and its replay.

``gateway record`` writes it, ``gateway dry-run`` and ``gateway simulate --replay`` read it.
The first line is a header (``{"format": "backflush-gateway-recording", "version": 1, …}``,
optional in a hand-written file); every other line is one tag value as a source handed it
to the gateway:

* ``at``: when the gateway received it (the service's clock: confirm timers run on it);
* ``batch``: values that came in one delivery share the number (the service applies a
  delivery as one change-set, in its order); a line without one is a delivery of its own;
* ``source``, ``machine``, ``role`` (``good``, ``scrap``, ``order``), ``address`` (the OPC UA
  node id as the mapping writes it, or the Modbus tag as ``holding 100..101 uint32``);
* ``value``, ``source_time``, ``server_time``, ``status`` and ``quality`` as the PLC sent
  them; a Modbus value also has its ``table``, first ``register`` and raw ``registers``.

A replay (``replay``) gives the values to the tags of *a* mapping — the recording's own or
another one (``--against``) — matched by source name and address: an OPC UA tag by its node
id, a Modbus tag by its registers, which are decoded with that mapping's type, word and
byte order. So a mapping that reads the same registers in another order, or counts them
with another width or units per cycle, is judged against what the PLC really sent.

Reading and decoding only: this module never touches a ledger, a socket or a clock.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.sources.base import Quality
from gateway.inputfile.errors import FileError, InputFileError
from gateway.mapping.model import Mapping
from gateway.sources import modbus_tags, opcua_tags
from gateway.sources.base import ORDER_ROLE, TagValue
from gateway.sources.modbus.registers import DecodeError, ModbusTag, decode

FORMAT = "backflush-gateway-recording"
VERSION = 1

Scalar = int | str | float | bool | None


class Header(BaseModel):
    """The first line: what was recorded, from which mapping, when."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["backflush-gateway-recording"]
    version: Literal[1]
    mapping: str | None = None
    started_at: datetime | None = None
    seconds: float | None = None
    sources: dict[str, str] = {}  # source name → protocol


# A field named `register` shadows the metaclass's ABCMeta.register (see gateway.mapping.model).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Recorded(BaseModel):
        """One tag value as a source delivered it."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        at: datetime
        batch: int | None = None
        source: str
        machine: str
        role: str
        address: str
        value: Scalar
        source_time: datetime | None = None  # None: the same as ``at`` (Modbus has no timestamps)
        server_time: datetime | None = None
        status: str | None = None
        quality: Literal["good", "uncertain", "bad"] = "good"
        # Modbus only: where the value was, and the registers as read.
        table: Literal["holding", "input"] | None = None
        register: int | None = None
        registers: list[int] | None = None


@dataclass
class Recording:
    file: str
    header: Header | None
    values: list[Recorded]


def json_value(value: object) -> Scalar:
    """A delivered value as JSON can hold it; anything else (a structure, bytes) as its text,
    which a counter or an order tag refuses on replay exactly as it refused the original."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def line_of(source: str, tv: TagValue, address: str, batch: int, tag: ModbusTag | None = None,
            registers: list[int] | None = None) -> dict[str, Any]:
    """The JSON object of one delivered value (see the module docstring)."""
    out: dict[str, Any] = {"at": tv.received_at.isoformat(), "batch": batch, "source": source,
                           "machine": tv.machine, "role": tv.role, "address": address,
                           "value": json_value(tv.value), "source_time": tv.source_time.isoformat()}
    if tv.server_time is not None:
        out["server_time"] = tv.server_time.isoformat()
    if tv.status is not None:
        out["status"] = tv.status
    out["quality"] = tv.quality.value
    if tag is not None:
        out.update(table=tag.table, register=tag.register, registers=registers)
    return out


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Every line of a recording; ``InputFileError`` with ``file:line:`` for each bad one."""
    file = os.fspath(path)
    try:
        text = open(file, encoding="utf-8").read()  # noqa: SIM115 — read whole, closed at once
    except OSError as exc:
        raise InputFileError([FileError(file, 1, "", f"cannot read the recording: {exc.strerror or exc}")]) from None
    header, values, errors = None, [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if number == 1 and isinstance(data, dict) and "format" in data:
                header = Header.model_validate(data)
            else:
                values.append(Recorded.model_validate(data))
        except json.JSONDecodeError as exc:
            errors.append(FileError(file, number, "", f"not JSON: {exc.msg}"))
        except ValidationError as exc:
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"])
                errors.append(FileError(file, number, where, e["msg"]))
        if len(errors) >= 20:
            break
    if errors:
        raise InputFileError(errors)
    return Recording(file, header, values)


@dataclass
class Replay:
    """A recording as a mapping's sources would have delivered it."""

    batches: list[tuple[datetime, list[TagValue]]]
    values: int  # tag values delivered
    not_recorded: list[str] = field(default_factory=list)  # "MACHINE role: address" of tags with no value
    undecodable: list[str] = field(default_factory=list)  # Modbus values this mapping cannot decode


def replay(recording: Recording, mapping: Mapping) -> Replay:
    """The recorded values, given to ``mapping``'s tags (see the module docstring)."""
    nodes: dict[tuple[str, str], list[tuple[str, str]]] = {}
    registers: dict[tuple[str, str], list[ModbusTag]] = {}
    wanted: dict[tuple[str, str], str] = {}
    for name, config in mapping.sources.items():
        if config.opcua is not None:
            for spec in opcua_tags(mapping, name):
                nodes.setdefault((name, spec.address), []).append((spec.machine, spec.role))
                wanted[(spec.machine, spec.role)] = spec.address
        else:
            for tag in modbus_tags(mapping, name):
                registers.setdefault((name, tag.table), []).append(tag)
                wanted[(tag.machine, tag.role)] = tag.address
    image: dict[tuple[str, str], dict[int, int]] = {}
    delivered: dict[ModbusTag, object] = {}
    seen: set[tuple[str, str]] = set()
    undecodable: dict[str, None] = {}
    batches: list[tuple[datetime, list[TagValue]]] = []
    count = 0
    for group in _deliveries(recording.values):
        out: list[TagValue] = []
        polled: list[TagValue] = []
        for r in group:
            quality = Quality(r.quality)
            source_time = r.source_time or r.at
            for machine, role in nodes.get((r.source, r.address), ()):
                out.append(TagValue(machine, role, r.value, source_time, quality, r.at, r.server_time, r.status))
            if r.registers is None or r.table is None or r.register is None:
                continue
            words = image.setdefault((r.source, r.table), {})
            words.update(zip(range(r.register, r.register + len(r.registers)), r.registers))
            touched = range(r.register, r.register + len(r.registers))
            for tag in registers.get((r.source, r.table), ()):
                if tag.last < touched.start or tag.register > touched[-1]:
                    continue
                span = range(tag.register, tag.last + 1)
                if any(a not in words for a in span):
                    continue
                try:
                    value = decode(tag, [words[a] for a in span])
                except DecodeError as exc:
                    undecodable[f"{tag.machine} {tag.role}: {exc}"] = None
                    continue
                if delivered.get(tag, _UNSET) == value:
                    continue  # as the Modbus source: only what changed is handed on
                delivered[tag] = value
                polled.append(TagValue(tag.machine, tag.role, value, source_time, quality, r.at))
        # As the Modbus source: the order tag first, its change explains the counters read with it.
        out += sorted(polled, key=lambda tv: tv.role != ORDER_ROLE)
        if out:
            batches.append((group[0].at, out))
            count += len(out)
            seen.update((tv.machine, tv.role) for tv in out)
    missing = [f"{machine} {role}: {address}" for (machine, role), address in wanted.items()
               if (machine, role) not in seen]
    return Replay(batches, count, missing, list(undecodable))


_UNSET = object()


def _deliveries(values: Iterable[Recorded]) -> Iterable[list[Recorded]]:
    """Consecutive lines of one ``batch`` (a line without one is a delivery of its own)."""
    group: list[Recorded] = []
    for r in values:
        if group and (r.batch is None or r.batch != group[-1].batch or r.source != group[-1].source):
            yield group
            group = []
        group.append(r)
    if group:
        yield group
