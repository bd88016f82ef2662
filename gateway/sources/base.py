"""What every source (OPC UA, Modbus TCP, …) hands to the rest of the gateway.

A source reads tags from one PLC connection and reports each value as a ``TagValue``
with the PLC's own timestamp and quality; ``SourceHealth`` says how the connection is
doing. These shapes are protocol-neutral so that every protocol module reuses them and
the consumer never learns which protocol a value came from. ``Source`` is what the
service runs; ``ReconnectingSource`` is the reconnect loop every protocol shares (its delays
come from ``gateway.backoff.Backoff``, which the ledger writer uses too).

A source must never drop, merge or reorder the values of a tag, never invent a value
(a missing reading is reported, not guessed) and never know about orders, confirmations
or stock: it only says "this tag had this value at this time, with this quality".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
import enum
from datetime import datetime
from typing import Any, Protocol

from gateway.backoff import Backoff

__all__ = ["ORDER_ROLE", "SERIAL_ROLE", "STATE_ROLE", "Backoff", "Quality", "ReconnectingSource", "Source", "SourceHealth", "TagSpec", "TagValue"]


class Quality(enum.StrEnum):
    """OPC UA status class of a value; Modbus reads are GOOD or BAD.

    The domain reads it as ``gateway.domain.records.ReadingQuality`` (the same words): it is the
    sources' concept, and the domain imports nothing of theirs.
    """

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


# The role of a machine's order-number tag; its counters' roles are their names.
ORDER_ROLE = "order"
SERIAL_ROLE = "serial"  # the serial of the unit just made, written per cycle
# The role of a machine's state tag (``count_when``).
STATE_ROLE = "state"


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag to read: which machine it belongs to, what it means, where it is.

    ``role`` is what the consumer does with it: ``"good"``, ``"scrap"``, ``"order"``.
    ``address`` is protocol syntax (an OPC UA node id such as ``ns=2;s=Press01.Good``),
    exactly as written in the mapping file. A Modbus tag needs more than an address
    (table, type, word and byte order): the Modbus source takes ``ModbusTag``s instead.
    """

    machine: str
    role: str
    address: str


@dataclass(frozen=True, slots=True)
class TagValue:
    """One value of one tag, as the PLC reported it.

    ``source_time`` is the PLC's timestamp (UTC, timezone-aware); ``received_at`` is when
    the gateway got it. ``value`` is ``None`` when the PLC sent no usable value (then
    ``quality`` is not GOOD). ``server_time`` and ``status`` are what the protocol said
    besides (OPC UA: the ServerTimestamp and the StatusCode's name), for ``gateway record``;
    None where the protocol has no such thing (Modbus). Nothing decides by them.
    """

    machine: str
    role: str
    value: object
    source_time: datetime
    quality: Quality
    received_at: datetime
    server_time: datetime | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A snapshot of one source's connection, for status pages, metrics and logs.

    ``bad_tags`` maps a tag address to why it cannot be read (unknown node id, no
    access, …); the other tags keep working while a tag is listed here.
    """

    source: str
    connected: bool = False
    last_data_at: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None
    bad_tags: Mapping[str, str] = field(default_factory=dict)


class Source(Protocol):
    """What the service runs: one connection's ``run()`` until cancelled, and its health.

    A source is built with its tags and an ``on_batch(list[TagValue])`` callback, which
    it calls from the event loop; how it gets the values is its protocol's business.
    """

    name: str

    async def run(self) -> None: ...

    @property
    def health(self) -> SourceHealth: ...


def _raise_if_cancel_swallowed() -> None:
    """Honour a cancellation that library code caught and dropped.

    asyncua's teardown, for one, awaits its own tasks under ``except CancelledError:
    pass``; a gateway stopping at that moment would see its source reconnect forever
    instead of ending. ``cancelling()`` still counts the request (nothing uncancelled it).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ReconnectingSource:
    """What every protocol's source does the same way: serve one connection until it
    fails, say why, back off, serve a fresh one — forever — and keep the health figures.

    A protocol subclasses it with ``_serve()`` (one connection from connect to loss; it
    ends only by raising, sets ``_connected`` and counts ``_connects`` once the connection
    works, and resets ``_backoff`` then) and ``_why(exc)`` (the error and a hint for
    people). The log event is ``<protocol>.disconnected``.
    """

    protocol = "source"

    def __init__(self, name: str, reconnect_min_s: float, reconnect_max_s: float, log: Any) -> None:
        self.name = name
        self._log = log
        self._backoff = Backoff(reconnect_min_s, max(reconnect_min_s, reconnect_max_s))
        self._connected = False
        self._connects = 0
        self._last_data_at: datetime | None = None
        self._last_error: str | None = None
        self._bad_tags: dict[str, str] = {}

    @property
    def health(self) -> SourceHealth:
        return SourceHealth(
            source=self.name,
            connected=self._connected,
            last_data_at=self._last_data_at,
            reconnects=max(0, self._connects - 1),
            last_error=self._last_error,
            bad_tags=dict(self._bad_tags),
        )

    async def run(self) -> None:
        """Serve, and rebuild the connection whenever it fails, until cancelled; never raises otherwise."""
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure means: reconnect
                error, hint = self._why(exc)
            else:  # _serve only ends by raising; this keeps the loop total anyway
                error, hint = "connection ended", "reconnecting"
            _raise_if_cancel_swallowed()
            self._last_error = error
            delay = self._backoff.next()
            self._log.warning(f"{self.protocol}.disconnected", error=error, retry_in_s=round(delay, 2), hint=hint)
            await asyncio.sleep(delay)

    async def _serve(self) -> None:
        raise NotImplementedError

    def _why(self, exc: Exception) -> tuple[str, str]:
        raise NotImplementedError
