"""``gateway record``: what the mapping's tags deliver for a while, to a recording file.

Runs the gateway's own sources (``gateway.sources.build_sources``: an OPC UA subscription,
a Modbus poll) for the mapping's tags and writes every value they hand on, as they hand it
on, one JSON line each (``gateway.commissioning.recording``), then stops them. A Modbus
value is written with the registers it was decoded from (encoded back with the tag's own
type, word and byte order: the codec is exact both ways for the types a tag can have), so a
dry-run of another mapping can decode them its own way.

It never touches a ledger and never writes to a PLC; what it writes is the file.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import structlog

from gateway.clock import utcnow
from gateway.commissioning.recording import FORMAT, VERSION, line_of
from gateway.mapping.model import Mapping
from gateway.sources import build_sources, modbus_tags, opcua_tags
from gateway.sources.base import Source, TagValue
from gateway.sources.modbus.registers import ModbusTag, encode

log = structlog.get_logger("gateway.record")

STOP_TIMEOUT_S = 5.0


@dataclass
class RecordResult:
    values: int = 0
    per_tag: Counter = field(default_factory=Counter)  # (machine, role) → values written
    silent: list[str] = field(default_factory=list)  # "MACHINE role: address" of tags that delivered nothing
    sources_down: dict[str, str] = field(default_factory=dict)  # source → its last error, if never connected


class _Writer:
    def __init__(self, mapping: Mapping, out: IO[str]) -> None:
        self.out = out
        self.result = RecordResult()
        self.batch = 0
        self.addresses: dict[tuple[str, str, str], str] = {}
        self.modbus: dict[tuple[str, str, str], ModbusTag] = {}
        for name, config in mapping.sources.items():
            if config.opcua is not None:
                for spec in opcua_tags(mapping, name):
                    self.addresses[(name, spec.machine, spec.role)] = spec.address
            else:
                for tag in modbus_tags(mapping, name):
                    self.addresses[(name, tag.machine, tag.role)] = tag.address
                    self.modbus[(name, tag.machine, tag.role)] = tag

    def deliver(self, source: str, values: list[TagValue]) -> None:
        self.batch += 1
        lines = []
        for tv in values:
            key = (source, tv.machine, tv.role)
            tag = self.modbus.get(key)
            registers = None
            if tag is not None and tv.value is not None:
                try:
                    registers = [int(w) for w in encode(tag, tv.value)]
                except (ValueError, TypeError):  # not this tag's type: kept as the value alone
                    registers = None
            lines.append(json.dumps(line_of(source, tv, self.addresses.get(key, ""), self.batch,
                                            tag if registers is not None else None, registers)))
            self.result.per_tag[(tv.machine, tv.role)] += 1
        self.result.values += len(values)
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()  # a recording cut short by a kill keeps what was read


async def record(mapping: Mapping, seconds: float, out: IO[str], *, mapping_name: str,
                 stop: asyncio.Event | None = None) -> RecordResult:
    """Record the mapping's tags for ``seconds`` (or until ``stop``) into ``out``."""
    writer = _Writer(mapping, out)
    began: datetime = utcnow()
    out.write(json.dumps({"format": FORMAT, "version": VERSION, "mapping": mapping_name,
                          "started_at": began.isoformat(), "seconds": seconds,
                          "sources": {n: c.protocol for n, c in mapping.sources.items()}}) + "\n")
    sources: list[Source] = []
    for name, config in mapping.sources.items():
        one = mapping.model_copy(update={"sources": {name: config}})
        sources += build_sources(one, lambda values, name=name: writer.deliver(name, values))
    tasks = [asyncio.create_task(src.run(), name=f"record:{src.name}") for src in sources]
    log.info("recording", sources=len(sources), seconds=seconds)
    stop = stop or asyncio.Event()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    result = writer.result
    result.silent = [f"{m} {r}: {address}" for (_, m, r), address in writer.addresses.items()
                     if (m, r) not in result.per_tag]
    result.sources_down = {src.name: src.health.last_error or "no connection"
                           for src in sources if src.health.last_data_at is None}
    return result
