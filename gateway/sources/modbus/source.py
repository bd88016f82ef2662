"""Modbus TCP source: polls one unit's counter and order tags and hands on what changed.

``ModbusSource.run()`` keeps polling one unit (host, port, unit id) for as long as the
gateway runs and calls ``on_batch`` once per poll with the values read. It exists so that
every count a PLC shows reaches the consumer, across device restarts, network outages,
busy devices and registers that do not exist. How it
does that (read grouping, change detection, per-read failures, timeouts) is in this
folder's README.md.

This module must never drop, reorder or invent a value, never raise out of ``run()``
(except on cancellation), call pymodbus other than through ``client``, or know
about orders, confirmations or stock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from gateway.sources.base import Quality
from gateway.mapping.model import ModbusSource as ModbusSourceConfig
from gateway.backoff import Backoff
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, ReconnectingSource, TagValue
from gateway.sources.modbus.client import (
    ILLEGAL_ADDRESS,
    ModbusClient,
    ModbusConnectionError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusNoResponse,
)
from gateway.sources.modbus.registers import DecodeError, ModbusTag, Read, one_read_per_tag, plan_reads
from gateway.clock import utcnow

__all__ = ["ModbusSource"]

BAD_TAG_HINT = ("the device has no such register: check `register` and `table` in the mapping against the "
                "device's register map (addresses are 0-based: holding register 40101 is register 100)")
_HINTS = {
    1: "the device does not serve this table: check `table` (holding or input) in the mapping",
    2: BAD_TAG_HINT,
    3: "the device refuses a read this long: lower max_registers_per_read (or max_gap_registers) of the source",
    4: "the device reports an internal failure; check the device",
    5: "the device is still working on an earlier request; retrying",
    6: "the device is busy (e.g. a program download or a long scan); retrying",
    10: "the Modbus gateway has no path to this unit: check the unit id and the gateway's routing",
    11: "the unit behind the Modbus gateway does not answer: check the unit id, its power and the serial line",
}
_NOT_ANSWERING_HINT = ("no answer in time: check the unit id (a wrong one is often just not answered), "
                       "the network path, or raise timeout_s")

_UNSET = object()


@dataclass
class _Group:
    """One read of the plan, and how its failures are going."""

    read: Read
    backoff: Backoff
    retry_at: float = 0.0
    failing_since: float | None = None  # monotonic time of the first failure of a streak
    failing_with: str = ""  # the error of the streak; another error is news and is logged

    @property
    def machines(self) -> str:
        return ", ".join(dict.fromkeys(t.machine for t in self.read.tags))


@dataclass
class _Connection:
    """State of one connection: the plan (reads split after illegal-address answers) and
    what was last delivered per tag (a tag not in it is delivered on the next read)."""

    client: ModbusClient
    groups: list[_Group]
    delivered: dict[ModbusTag, object] = field(default_factory=dict)
    reported: set[ModbusTag] = field(default_factory=set)  # undecodable tags already logged
    overrun_reported: bool = False
    read_any: bool = False


class ModbusSource(ReconnectingSource):
    """One Modbus unit: polls ``tags`` every ``poll_interval_ms`` and calls ``on_batch``.

    ``on_batch`` is called from the event loop with the changed values of one poll. It
    must not block; if it raises, the next poll delivers every value again.
    """

    protocol = "modbus"

    def __init__(
        self,
        name: str,
        config: ModbusSourceConfig,
        tags: Sequence[ModbusTag],
        on_batch: Callable[[list[TagValue]], None],
        log: Any = None,
        *,
        grouped: bool = True,
    ) -> None:
        log = (log or structlog.get_logger(__name__)).bind(
            source=name, endpoint=f"{config.host}:{config.port}", unit=config.unit
        )
        super().__init__(name, config.reconnect_min_s, config.reconnect_max_s, log)
        self.config = config
        self.tags = list(tags)
        self._on_batch = on_batch
        self._reads = (
            plan_reads(self.tags, max_gap=config.max_gap_registers, max_count=config.max_registers_per_read)
            if grouped else one_read_per_tag(self.tags)
        )

    # --- public -----------------------------------------------------------------------

    @property
    def plan(self) -> tuple[Read, ...]:
        """The requests one poll sends, in order, while no read is split or backing off."""
        return tuple(self._reads)

    @property
    def reads_per_poll(self) -> int:
        """Requests one poll sends while no read is split or backing off."""
        return len(self._reads)

    # run() and health come from ReconnectingSource: connect, poll, deliver; reconnect
    # whenever the connection fails, until cancelled.

    async def read_once(self) -> list[TagValue]:
        """Connect, read every tag once, disconnect; one value per tag, in ``tags`` order.

        For ``gateway validate --live``: a tag that cannot be read comes back with BAD
        quality and ``value=None``, and ``health.bad_tags`` says why. Connection errors
        are raised, not retried.
        """
        conn = await self._connect()
        try:
            values = {(tv.machine, tv.role): tv for tv in await self._poll(conn)}
        finally:
            conn.client.close()
        now = utcnow()
        return [values.get((t.machine, t.role)) or TagValue(t.machine, t.role, None, now, Quality.BAD, now)
                for t in self.tags]

    # --- one connection ---------------------------------------------------------------

    async def _connect(self) -> _Connection:
        client = ModbusClient(self.config.host, self.config.port, self.config.timeout_s)
        await client.connect()
        return _Connection(client, [_Group(read, self._new_backoff()) for read in self._reads])

    async def _serve(self) -> None:
        """One connection from connect to loss; returns only by raising why it ended."""
        conn = await self._connect()
        try:
            self._connected = True
            self._connects += 1
            interval = self.config.poll_interval_ms / 1000
            next_poll = time.monotonic()
            while True:
                values = await self._poll(conn)
                if conn.read_any:
                    self._backoff.reset()  # this connection works: the next outage starts fast again
                if values:
                    self._deliver(conn, values)
                next_poll = self._next_poll(conn, next_poll, interval)
                await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
        finally:
            self._connected = False
            conn.client.close()

    def _next_poll(self, conn: _Connection, previous: float, interval: float) -> float:
        now = time.monotonic()
        target = previous + interval
        if target >= now:
            return target
        if not conn.overrun_reported:
            conn.overrun_reported = True
            self._log.warning(
                "modbus.poll_overrun",
                poll_took_s=round(now - previous, 3),
                poll_interval_ms=self.config.poll_interval_ms,
                reads=len(conn.groups),
                hint="one poll takes longer than poll_interval_ms: raise it, or let more tags share a read "
                "(max_gap_registers); polls now run back to back",
            )
        return now  # skip the missed polls instead of bursting to catch up

    async def _poll(self, conn: _Connection) -> list[TagValue]:
        """Every read that is due, in plan order; the values that changed."""
        values: list[TagValue] = []
        i = 0
        while i < len(conn.groups):
            group = conn.groups[i]
            if group.retry_at > time.monotonic():
                i += 1
                continue
            try:
                words = await conn.client.read(group.read.table, group.read.start, group.read.count, self.config.unit)
            except ModbusExceptionResponse as exc:
                if exc.code == ILLEGAL_ADDRESS and len(group.read.tags) > 1:
                    conn.groups[i : i + 1] = self._split(group)
                    continue  # read the parts now: the good tags lose no poll
                self._read_failed(conn, group, exc)
                i += 1
                continue
            except (ModbusNoResponse, ModbusConnectionError) as exc:
                raise _ReadLost(exc, group) from exc
            conn.read_any = True
            received_at = self._last_data_at = utcnow()  # a read that worked is data, changed or not
            if group.failing_since is not None:
                self._read_recovered(group)
            values += self._changed(conn, group, words, received_at)
            i += 1
        # A serial read in this poll names the unit counted by the counters read with it,
        # whichever read it came in: it goes first (the sort keeps everything else in order).
        return sorted(values, key=lambda tv: tv.role != SERIAL_ROLE)

    def _split(self, group: _Group) -> list[_Group]:
        self._log.info(
            "modbus.read_split",
            machines=group.machines,
            register=group.read.address,
            reads=len(group.read.tags),
            hint="the device refused a grouped read (a register in a gap does not exist?); reading these tags "
            "one by one until reconnect. Lower max_gap_registers to avoid the extra requests",
        )
        return [_Group(read, self._new_backoff()) for read in one_read_per_tag(group.read.tags)]

    def _changed(self, conn: _Connection, group: _Group, words: Sequence[Any], received_at: datetime) -> list[TagValue]:
        # The order tag first: its change explains the counters read with it.
        decoded = sorted(group.read.values(words), key=lambda tv: tv[0].role != ORDER_ROLE)
        out = []
        for tag, value in decoded:
            if isinstance(value, DecodeError):
                self._undecodable(conn, tag, value)
                continue
            conn.reported.discard(tag)
            if self._bad_tags:  # one that was bad, maybe on an earlier connection, is fine now
                self._bad_tags.pop(tag.address, None)
            if conn.delivered.get(tag, _UNSET) == value:
                continue
            conn.delivered[tag] = value
            out.append(TagValue(tag.machine, tag.role, value, received_at, Quality.GOOD, received_at))
        return out

    def _deliver(self, conn: _Connection, values: list[TagValue]) -> None:
        try:
            self._on_batch(values)
        except Exception:  # noqa: BLE001 - a consumer bug must not kill the source
            self._log.exception("modbus.consumer_failed", values=len(values))
            # The consumer may have missed these: hand on every value at the next poll.
            conn.delivered.clear()

    # --- failures of one read -----------------------------------------------------------

    def _read_failed(self, conn: _Connection, group: _Group, exc: ModbusExceptionResponse) -> None:
        delay = group.backoff.next()
        group.retry_at = time.monotonic() + delay
        for tag in group.read.tags:
            conn.delivered.pop(tag, None)  # deliver them all again once the read works
        bad_tag = exc.code == ILLEGAL_ADDRESS
        if bad_tag:
            for tag in group.read.tags:
                self._bad_tags[tag.address] = str(exc)
        if group.failing_since is not None and group.failing_with == str(exc):
            return  # logged at the start of this streak
        group.failing_since = group.failing_since or time.monotonic()
        group.failing_with = str(exc)
        tag = group.read.tags[0]
        # ERROR: the mapping is wrong; WARNING: the device is, for now.
        log = self._log.error if bad_tag else self._log.warning
        log(
            "modbus.bad_tag" if bad_tag else "modbus.read_failed",
            machine=group.machines,
            role=tag.role if len(group.read.tags) == 1 else None,
            register=group.read.address,
            error=str(exc),
            retry_in_s=round(delay, 2),
            hint=_HINTS.get(exc.code, "the device refused the read; retrying"),
        )

    def _read_recovered(self, group: _Group) -> None:
        assert group.failing_since is not None
        self._log.info(
            "modbus.read_recovered",
            machine=group.machines,
            register=group.read.address,
            failed_for_s=round(time.monotonic() - group.failing_since, 2),
        )
        group.failing_since = None
        group.backoff.reset()

    def _undecodable(self, conn: _Connection, tag: ModbusTag, error: DecodeError) -> None:
        self._bad_tags[tag.address] = str(error)
        conn.delivered.pop(tag, None)
        if tag in conn.reported:
            return
        conn.reported.add(tag)
        self._log.error("modbus.bad_value", machine=tag.machine, role=tag.role, register=tag.address,
                        error=str(error), hint="check register, type, length and byte/word order in the mapping")

    def _why(self, exc: Exception) -> tuple[str, str]:
        return _explain(exc)

    def _new_backoff(self) -> Backoff:
        return Backoff(self.config.reconnect_min_s, max(self.config.reconnect_min_s, self.config.reconnect_max_s))


class _ReadLost(Exception):
    """The connection failed during a read; names the read for the log."""

    def __init__(self, cause: ModbusError, group: _Group) -> None:
        super().__init__(f"{cause} (reading {group.read.address} for {group.machines})")
        self.cause = cause


def _explain(exc: Exception) -> tuple[str, str]:
    """(error, hint) for the reconnect log line."""
    cause = exc.cause if isinstance(exc, _ReadLost) else exc
    if isinstance(cause, ModbusNoResponse):
        return str(exc), _NOT_ANSWERING_HINT
    if isinstance(cause, ModbusConnectionError):
        if "refused" in str(cause):
            return str(exc), "nothing listens at host:port: is the device on, are host and port right?"
        return str(exc), "the connection dropped (device restart or network); reconnecting"
    if isinstance(cause, OSError):
        return f"{type(exc).__name__}: {exc}", "network error: check host, port and the network path"
    return f"{type(exc).__name__}: {exc}", "unexpected error; the source keeps retrying"

