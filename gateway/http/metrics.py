"""Prometheus metrics of one running gateway, in a registry of its own (several gateways in one
process, as in tests, do not share figures).

Three kinds of figures, each read where it is cheap and exact:

* **Committed** — units counted and confirmed per machine, commit durations — come from the
  ledger writer's ``after_commit`` hook with what each transaction committed, starting from
  what the ledger held when the gateway started (``seed``). So they equal the ledger's
  ``counted_units`` and confirmations, never what is merely queued.
* **Live** — sources, pending units, reading ages, the writer's queue — are read from the
  gateway's memory at scrape time, on the event loop.
* **Ledger-only** — open error-queue items, open anomalies, units held — are read by
  ``LedgerFigures.read`` in a worker thread every few seconds and cached; a scrape never
  queries the database, and nothing here runs on the writer's thread but the hook.

Labels are bounded: machine, source, material, anomaly kind, counter kind — never an order
number or an id. This module only reads; it changes nothing in the gateway or the ledger.
"""

from __future__ import annotations

import asyncio
import math
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from prometheus_client import CollectorRegistry, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from gateway.domain.records import AnomalyStatus, ErrorStatus
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.failures import short_error
from gateway.ledger.writer import Committed

log = structlog.get_logger("gateway.http")

LEDGER_EVERY_S = 5.0  # how often the ledger-only figures are read
KINDS = ("yield", "scrap")
# Commit durations: a few ms on SQLite with small batches, up to seconds when the database is slow.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LedgerFigures:
    """What only the ledger knows, as of ``read_at`` (``time.monotonic()``; None: never read)."""

    errors_open: dict[str, int] = field(default_factory=dict)  # material → open error-queue items
    anomalies_open: dict[str, int] = field(default_factory=dict)  # kind → open anomalies
    held: dict[str, Decimal] = field(default_factory=dict)  # machine → units held by open anomalies
    outbox: list = field(default_factory=list)  # gateway.ledger.outbox.TargetStats per target
    read_at: float | None = None
    error: str | None = None  # the last read's failure; the figures are then the last good ones

    @staticmethod
    def read(engine: Engine) -> LedgerFigures:
        e, a = t.error_queue, t.anomalies
        with engine.connect() as conn:
            errors = dict(conn.execute(select(e.c.material, func.count()).where(e.c.status == ErrorStatus.OPEN)
                                       .group_by(e.c.material)).all())
            held: dict[str, Decimal] = defaultdict(Decimal)
            kinds: dict[str, int] = defaultdict(int)
            # Summed here: SQLite keeps quantities as text. Open anomalies are few (a person decides each).
            for r in conn.execute(select(a.c.machine, a.c.kind, a.c.units_held).where(a.c.status == AnomalyStatus.OPEN)):
                kinds[r.kind] += 1
                held[r.machine] += r.units_held
        return LedgerFigures(errors, dict(kinds), dict(held), outbox.stats(engine), time.monotonic())


class GatewayMetrics:
    """The figures of one ``Gateway``; ``render()`` is the /metrics body."""

    def __init__(self, gateway, *, ledger_every_s: float = LEDGER_EVERY_S) -> None:
        self.gateway = gateway
        self.engine = gateway.engine  # for the ledger-only figures; the server gives it an engine of its own
        self.ledger_every_s = ledger_every_s
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()  # the hook runs in the writer thread, scrapes on the loop
        self.counted: dict[str, Decimal] = {}  # machine → units counted ever (the ledger's counted_units)
        self.confirmed: dict[tuple[str, str], Decimal] = {}  # (machine, yield|scrap) → units confirmed ever
        self.ledger = LedgerFigures()
        self.commit_seconds = Histogram("gateway_commit_seconds", "Duration of each ledger transaction of the "
                                        "writer, begin to commit", buckets=COMMIT_BUCKETS, registry=self.registry)
        Info("gateway_build", "The gateway's version and Python", registry=self.registry).info(
            {"version": build_version(), "python": platform.python_version()})
        self.registry.register(_Figures(self))

    # -- committed figures ---------------------------------------------------------------

    def seed(self, engine: Engine) -> None:
        """What the ledger holds for the mapping's machines now: before the writer starts, and when a
        reload adds machines."""
        machines = list(self.gateway.mapping.machines)
        c = t.confirmations.c
        confirmed: dict[tuple[str, str], Decimal] = {(m, k): Decimal(0) for m in machines for k in KINDS}
        with engine.connect() as conn:
            counted = {r.machine: Decimal(r.units) for r in conn.execute(
                select(t.counted_units).where(t.counted_units.c.machine.in_(machines)))}
            for r in conn.execute(select(c.machine, c.yield_qty, c.scrap_qty).where(c.machine.in_(machines))):
                confirmed[(r.machine, "yield")] += r.yield_qty
                confirmed[(r.machine, "scrap")] += r.scrap_qty
        with self._lock:
            self.counted = {m: counted.get(m, Decimal(0)) for m in machines}
            self.confirmed = confirmed

    def committed(self, done: Committed) -> None:
        """The writer's after-commit hook (writer thread): add what this transaction committed."""
        batch = done.changes
        self.commit_seconds.observe(max(0.0, done.committed_at - done.began_at))
        if done.posted and done.posted != len(batch.confirmations):
            # Some were replays of confirmations already in the ledger (a retried transaction whose
            # first outcome was unknown): which ones is not known here, so read the totals again.
            log.info("metrics_resync", reason="replayed confirmations", posted=done.posted,
                     batch=len(batch.confirmations))
            self.seed(self.gateway.engine)
            return
        touched = {c.machine for c in batch.confirmations} | set(batch.counted)
        if (touched - self.counted.keys()) & self.gateway.mapping.machines.keys():
            # A machine a reload added: its past is in the ledger, not in these figures yet; the
            # read includes this transaction, committed just now.
            self.seed(self.gateway.engine)
            return
        with self._lock:
            self.counted.update(batch.counted)  # absolute figures, as the ledger has them now
            if done.posted:
                for c in batch.confirmations:
                    for kind, qty in (("yield", c.yield_qty), ("scrap", c.scrap_qty)):
                        self.confirmed[(c.machine, kind)] = self.confirmed.get((c.machine, kind), Decimal(0)) + qty

    def committed_figures(self, machine: str) -> tuple[Decimal, Decimal, Decimal]:
        """Units counted, confirmed yield and confirmed scrap of ``machine``, as committed."""
        with self._lock:
            return (self.counted.get(machine, Decimal(0)), self.confirmed.get((machine, "yield"), Decimal(0)),
                    self.confirmed.get((machine, "scrap"), Decimal(0)))

    # -- ledger-only figures ---------------------------------------------------------------

    async def keep_ledger_figures(self) -> None:
        """Read the ledger-only figures every ``ledger_every_s`` in a worker thread, forever."""
        while True:
            await self.refresh_ledger()
            await asyncio.sleep(self.ledger_every_s)

    async def refresh_ledger(self) -> None:
        try:
            self.ledger = await asyncio.to_thread(LedgerFigures.read, self.engine)
        except Exception as exc:  # noqa: BLE001 — a read; readiness reports it, the next round retries
            self.ledger.error = short_error(exc)
            log.warning("ledger_figures_not_read", error=self.ledger.error,
                        hint="/ready reports the ledger unreachable until a read succeeds")
        else:
            self.ledger.error = None

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Figures(Collector):
    """The live and cached figures, built at each scrape from what is in memory."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        gw, m = self.m.gateway, self.m
        now = time.time()
        connected = GaugeMetricFamily("gateway_source_connected", "1 if the source's PLC connection works",
                                      labels=["source"])
        reconnects = CounterMetricFamily("gateway_source_reconnects", "Connections rebuilt since start",
                                         labels=["source"])
        data_age = GaugeMetricFamily("gateway_source_last_data_age_seconds", "Seconds since the source last "
                                     "delivered data (NaN: never)", labels=["source"])
        for name, h in gw.source_health().items():
            connected.add_metric([name], 1.0 if h.connected else 0.0)
            reconnects.add_metric([name], h.reconnects)
            data_age.add_metric([name], now - h.last_data_at.timestamp() if h.last_data_at else math.nan)
        yield from (connected, reconnects, data_age)

        counted = CounterMetricFamily("gateway_units_counted", "Units the machine's counters showed, ever, as "
                                      "committed to the ledger (its counted_units)", labels=["machine"])
        confirmed = CounterMetricFamily("gateway_units_confirmed", "Units confirmed, ever, as committed",
                                        labels=["machine", "kind"])
        pending = GaugeMetricFamily("gateway_units_pending", "Units counted and not yet confirmed (in memory)",
                                    labels=["machine", "kind"])
        held = GaugeMetricFamily("gateway_units_held", "Units held by open anomalies (ledger, cached)",
                                 labels=["machine"])
        reading_age = GaugeMetricFamily("gateway_last_reading_age_seconds", "Seconds since the gateway last "
                                        "received a value of the machine (NaN: never)", labels=["machine"])
        last_read = _last_received(gw)
        for name, rt in gw.machines.items():
            units, good, scrap = m.committed_figures(name)
            counted.add_metric([name], float(units))
            confirmed.add_metric([name, "yield"], float(good))
            confirmed.add_metric([name, "scrap"], float(scrap))
            pending.add_metric([name, "yield"], float(sum((p.yield_qty for p in rt.pendings.values()), Decimal(0))))
            pending.add_metric([name, "scrap"], float(sum((p.scrap_qty for p in rt.pendings.values()), Decimal(0))))
            held.add_metric([name], float(m.ledger.held.get(name, 0)))
            at = last_read.get(name)
            reading_age.add_metric([name], now - at if at is not None else math.nan)
        yield from (counted, confirmed, pending, held, reading_age)

        w = gw.writer
        yield GaugeMetricFamily("gateway_writer_queue_depth", "Change-sets waiting for the ledger writer",
                                value=w.queue_depth)
        failing = w.health.failing_since
        yield GaugeMetricFamily("gateway_writer_failing_seconds", "Seconds the writer has been failing to commit "
                                "(0: it is not)", value=(now - failing.timestamp()) if failing else 0.0)
        yield GaugeMetricFamily("gateway_writer_alive", "1 while the ledger writer thread runs",
                                value=1.0 if w.alive else 0.0)
        errors = GaugeMetricFamily("gateway_error_queue_open", "Open backflush error-queue items (ledger, cached)",
                                   labels=["material"])
        for material, n in sorted(m.ledger.errors_open.items()):
            errors.add_metric([material], n)
        anomalies = GaugeMetricFamily("gateway_anomalies_open", "Open anomalies (ledger, cached)", labels=["kind"])
        for kind, n in sorted(m.ledger.anomalies_open.items()):
            anomalies.add_metric([kind], n)
        yield from _outbox_figures(m.ledger.outbox)
        age = (time.monotonic() - m.ledger.read_at) if m.ledger.read_at is not None else math.nan
        yield from (errors, anomalies, GaugeMetricFamily(
            "gateway_ledger_figures_age_seconds", "Age of the cached ledger-only figures", value=age))


def _outbox_figures(stats) -> Iterator[Metric]:
    pending = GaugeMetricFamily("gateway_outbox_pending", "Deliveries not yet delivered nor parked (ledger, cached)",
                                labels=["target"])
    oldest = GaugeMetricFamily("gateway_outbox_oldest_seconds", "Age of the oldest of them (0: none)",
                               labels=["target"])
    parked = GaugeMetricFamily("gateway_outbox_parked", "Deliveries parked for a person (ledger, cached)",
                               labels=["target"])
    for s in stats:
        pending.add_metric([s.target], s.pending)
        oldest.add_metric([s.target], s.oldest_seconds)
        parked.add_metric([s.target], s.parked)
    yield from (pending, oldest, parked)


def _last_received(gw) -> dict[str, float]:
    """Machine → when its latest value arrived (epoch seconds), over all its tags."""
    out: dict[str, float] = {}
    for (machine, _), tv in list(gw.last_seen.items()):
        at = tv.received_at.timestamp()
        if at > out.get(machine, 0.0):
            out[machine] = at
    return out


def build_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backflush-gateway")
    except PackageNotFoundError:
        return "unknown"
