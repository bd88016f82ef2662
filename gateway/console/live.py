"""The plant board's live figures, built once per tick for every browser, and sent as Server-Sent Events.

Every ``tick_s`` the ``Board`` reads each machine through ``gateway.http.api.machine_view`` — the
accessor the JSON API answers with, on the event loop, from memory — and turns it into a board
row: state, order, operation, units today, rate per minute, pending, held, when the last value
came, the source's health, open anomalies. Only rows that changed since the last tick are sent,
so an idle plant costs nothing on the wire; ages are sent as timestamps and counted up by the
browser. Open anomalies per machine and the units confirmed today are ledger figures: read every
``ledger_every_s`` in a worker thread, on the API's own engine and within its limit of calls.

Units today are the machine's committed ``counted_units`` now minus its figure at the start of
the day: at the first read of a day the gateway did not see begin (its start), that figure is
``counted − confirmed today − pending``, from the ledger.

Never here: writing anything; a figure the JSON API computes, computed a second way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from datetime import date, datetime, time as day_time
from decimal import Decimal

import anyio
import structlog
from sqlalchemy import select

from gateway.http.api import machine_view
from gateway.sources.base import ORDER_ROLE

log = structlog.get_logger("gateway.console")

QUEUE_DEPTH = 8  # updates a slow browser may lag behind before it gets a fresh snapshot instead


def _num(value: Decimal | None) -> str | None:
    if value is None:
        return None
    d = Decimal(value)
    return format(d.normalize(), "f") if d == d.to_integral_value() else format(d, "f").rstrip("0")


class Board:
    """The board of one gateway: ``rows()`` now, ``stream()`` for each browser, ``run()`` as a server task."""

    def __init__(self, ctx, *, tick_s: float = 1.0, ledger_every_s: float = 5.0, stale_after_s: float = 300.0,
                 rate_window_s: float = 60.0) -> None:
        self.ctx = ctx
        self.tick_s, self.ledger_every_s = tick_s, ledger_every_s
        self.stale_after_s, self.rate_window_s = stale_after_s, rate_window_s
        self.subscribers: set[asyncio.Queue] = set()
        self.last: dict[str, dict] = {}  # the rows last sent
        self.samples: dict[str, deque[tuple[float, Decimal]]] = defaultdict(deque)  # machine → (monotonic, counted)
        self.anomalies: dict[str, int] = {}  # machine → open anomalies (ledger)
        self.day: date | None = None
        self.day_start: dict[str, Decimal] = {}  # machine → counted at the start of ``day``
        self.ticks = 0

    # -- figures ---------------------------------------------------------------------------

    def rows(self) -> dict[str, dict]:
        """Every machine's board row now (name → row)."""
        gw = self.ctx.gateway
        health = gw.source_health()  # once per tick, not per machine
        return {name: self._row(name, health) for name in sorted(gw.machines)}

    def row(self, name: str) -> dict:
        """One machine's board row now."""
        return self._row(name, self.ctx.gateway.source_health())

    def _row(self, name: str, health: dict) -> dict:
        gw = self.ctx.gateway
        v = machine_view(self.ctx, name, health)
        rt = gw.machines[name]
        mine = _addresses(rt.config)
        bad = {tag: why for tag, why in v.source.bad_tags.items() if _is_mine(tag, mine)}
        if not v.owned:
            state = "standby"
        elif not v.source.connected:
            state = "down"
        elif self.rate(name):
            state = "running"
        else:
            state = "idle"
        if not v.source.connected:
            source = "reconnecting" if v.source.reconnects or v.source.last_error else "connecting"
        else:
            source = "bad tag" if bad else "connected"
        start = self.day_start.get(name)
        counters = {}
        for counter, raw in v.counters.items():
            seen = gw.last_seen.get((name, counter))
            counters[counter] = {"raw": raw, "quality": seen.quality.name if seen is not None else None}
        seen_order = gw.last_seen.get((name, ORDER_ROLE))
        return {
            "name": name, "work_center": v.work_center, "source": v.source.name, "state": state,
            "order": v.order, "operation": v.operation, "counted": _num(v.counted_units),
            "today": _num(v.counted_units - start) if start is not None else None,
            "rate": _num(Decimal(self.rate(name)).quantize(Decimal("0.1"))),
            "pending": _num(v.pending.yield_ + v.pending.scrap), "held": _num(v.held),
            "confirmed": _num(v.confirmed.yield_ + v.confirmed.scrap),
            "last_at": v.last_reading_at.timestamp() if v.last_reading_at else None,
            "health": source, "health_detail": "; ".join(f"{t}: {w}" for t, w in sorted(bad.items()))
                                                or (v.source.last_error or "" if not v.source.connected else ""),
            "anomalies": self.anomalies.get(name, 0), "counters": counters,
            "order_quality": seen_order.quality.name if seen_order is not None else None,
        }

    def rate(self, name: str) -> float:
        """Units per minute over the last ``rate_window_s`` (as committed)."""
        s = self.samples.get(name)
        if not s or len(s) < 2 or s[-1][0] - s[0][0] <= 0:
            return 0.0
        return float(s[-1][1] - s[0][1]) * 60.0 / (s[-1][0] - s[0][0])

    def sample(self) -> None:
        """Note each machine's committed count now: the rate's history and the start of a new day."""
        now, today = time.monotonic(), date.today()
        metrics, machines = self.ctx.metrics, self.ctx.gateway.machines
        new_day = self.day is not None and today != self.day
        for name in machines:
            counted = metrics.committed_figures(name)[0]
            s = self.samples[name]
            s.append((now, counted))
            while s and now - s[0][0] > self.rate_window_s:
                s.popleft()
            if new_day:
                self.day_start[name] = counted  # seen at midnight, exact to a tick
        for name in set(self.samples) - set(machines):
            del self.samples[name]
        if new_day or self.day is None:
            self.day = today

    async def refresh_ledger(self) -> None:
        """Open anomalies per machine; the day's start of machines that have none yet."""
        ctx, gw = self.ctx, self.ctx.gateway
        missing = [m for m in gw.machines if m not in self.day_start]
        counted_before = {m: ctx.metrics.committed_figures(m)[0] for m in missing}
        pending_before = {m: sum((p.yield_qty + p.scrap_qty for p in gw.machines[m].pendings.values()), Decimal(0))
                          for m in missing}
        midnight = datetime.combine(date.today(), day_time()).astimezone()
        try:
            anomalies, confirmed = await anyio.to_thread.run_sync(
                lambda: _ledger_figures(ctx.ledger_engine, missing, midnight), limiter=ctx.ledger_calls)
        except Exception as exc:  # noqa: BLE001 — a read; the board keeps its last figures and says so in the log
            log.warning("console_ledger_figures_not_read", error=str(exc).splitlines()[0][:200])
            return
        self.anomalies = anomalies
        for m in missing:
            if m in gw.machines:
                self.day_start[m] = counted_before[m] - confirmed.get(m, Decimal(0)) - pending_before[m]

    # -- streaming -------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick forever: sample, and send what changed to every browser (a server task)."""
        last_ledger = 0.0
        try:
            while True:
                if time.monotonic() - last_ledger >= self.ledger_every_s:
                    last_ledger = time.monotonic()
                    await self.refresh_ledger()
                self.sample()
                if self.subscribers:
                    self.publish()
                self.ticks += 1
                await asyncio.sleep(self.tick_s)
        finally:
            for q in list(self.subscribers):
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)  # the streams end with the server

    def publish(self) -> None:
        rows = self.rows()
        changed = [r for name, r in rows.items() if self.last.get(name) != r]
        removed = sorted(set(self.last) - set(rows))
        self.last = rows
        if not changed and not removed:
            return
        update = {"rows": changed, "removed": removed}
        for q in list(self.subscribers):
            try:
                q.put_nowait(update)
            except asyncio.QueueFull:  # a slow browser: it gets the whole board once it reads again
                while not q.empty():
                    q.get_nowait()
                q.put_nowait({"snapshot": True})

    async def stream(self, machine: str | None = None) -> AsyncIterator[str]:
        """Server-Sent Events for one browser: the whole board first, then what changed."""
        q: asyncio.Queue = asyncio.Queue(QUEUE_DEPTH)
        self.subscribers.add(q)
        try:
            yield f"retry: 2000\nevent: config\ndata: {json.dumps({'stale_after_s': self.stale_after_s})}\n\n"
            yield _event(self._snapshot(machine))
            while True:
                try:
                    update = await asyncio.wait_for(q.get(), timeout=15)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"  # proxies close a silent connection
                    continue
                if update is None:
                    return
                if "snapshot" in update:
                    update = self._snapshot(machine)
                elif machine is not None:
                    update = {"rows": [r for r in update["rows"] if r["name"] == machine],
                              "removed": [n for n in update["removed"] if n == machine]}
                    if not update["rows"] and not update["removed"]:
                        continue
                yield _event(update)
        finally:
            self.subscribers.discard(q)

    def _snapshot(self, machine: str | None) -> dict:
        rows = self.rows()
        return {"rows": [r for n, r in rows.items() if machine in (None, n)], "removed": [], "snapshot": True}


def _event(update: dict) -> str:
    return f"event: rows\ndata: {json.dumps(update, separators=(',', ':'))}\n\n"


def _addresses(machine) -> set[str]:
    """The tag addresses of a machine as its source names them in ``bad_tags``."""
    out = set()
    for _, tag in machine.counters:
        if tag is not None:
            out.update(str(a) for a in (getattr(tag, "node", None), getattr(tag, "register", None)) if a is not None)
    order = machine.order
    for attr in ("node", "register"):
        if getattr(order, attr, None) is not None:
            out.add(str(getattr(order, attr)))
    return out


def _is_mine(address: str, mine: set[str]) -> bool:
    """An OPC UA node id as configured, or a Modbus read named ``holding 100..101 uint32``."""
    parts = address.split()
    return address in mine or (len(parts) >= 2 and parts[1].split("..")[0] in mine)


def _ledger_figures(engine, missing: list[str], midnight: datetime) -> tuple[dict[str, int], dict[str, Decimal]]:
    """Open anomalies per machine (the application layer's list); units confirmed since ``midnight``."""
    from gateway.app.anomalies import list_anomalies
    from gateway.ledger import schema

    anomalies: dict[str, int] = defaultdict(int)
    for a in list_anomalies(engine):
        if a.status == "open":
            anomalies[a.machine] += 1
    confirmed: dict[str, Decimal] = defaultdict(Decimal)
    if missing:
        c = schema.confirmations.c
        with engine.connect() as conn:
            # Summed here: SQLite keeps quantities as text.
            for r in conn.execute(select(c.machine, c.yield_qty, c.scrap_qty).where(
                    c.machine.in_(missing), c.posted_at >= midnight)):
                confirmed[r.machine] += r.yield_qty + r.scrap_qty
    return dict(anomalies), dict(confirmed)
