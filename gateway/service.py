"""The supervisor: sources → counting → confirming → one ledger writer.

``Gateway`` owns, per machine, the counter states and the units pending per order
operation. Each batch of tag values from a source is applied in order (an order-number
change before the counter values that follow it), through the pure core, and the
resulting changes go to the ``LedgerWriter`` as one ``Commit``. The writer commits them
together, so what is in the ledger is always a consistent point to resume from.

A machine with ``job_counters: reset`` counts the first value of each counter after an
order change from 0 (a job reset). An order change that happened while the gateway was not
reading (the first order value after a start or takeover differs from the committed one)
is a job change it did not see: the old job's last units are unknown, and say so. Which
counters still await their first value after an order change is committed with the order
change (and emptied with each first value), so a gateway killed in between takes that value
for the new job's after its restart too, not for a PLC reset. A
machine with ``count_when`` counts only while its state tag holds one of the listed
values; units counted otherwise (or before its state is known) are held as anomalies. A
state read in the same snapshot as a counter (the same source time: one Modbus poll, one PLC
scan) is that counter's state too: which of the two changed first is not known there, so
counts read with a change into or out of production are counted, not held.

A machine with a ``serial`` tag gets the serial of every unit it makes: each new value the
tag shows is the next unit's serial, and each good unit counted takes the next serial not
used before (``gateway.domain.serials.take_serials``). A good unit with no new serial (a
serial the PLC missed, or one read too late) or only a serial used before is held as an
anomaly (``serial_missing`` / ``serial_repeated``) for a person to accept or reject: never
received under a guessed serial, never lost. The first value read after a start is the
serial of a unit counted before it, not a new one.

Units counted while the order is unknown (no order number yet, or a number that is not
in the master data) are kept pending under that number and recorded as an anomaly;
they are confirmed as soon as the order is known. Nothing is dropped.

On shutdown the sources stop first, then every pending unit of a known order is
confirmed (trigger ``shutdown``), then the writer commits everything queued.

With leases (``gateway run``; see ``gateway.ownership``) the gateway counts only the
machines it owns. Every change-set carries the lease token of each machine it touches and
the writer's transaction is fenced by it. A machine lost to another instance is dropped
from memory (the new owner counts its units from the committed position); a machine taken
over is loaded from the ledger and fed the latest values its source delivered meanwhile,
as a new subscription would.

A reload of the mapping (``reload``: SIGHUP, ``gateway reload``) applies a new mapping
without a restart. Unchanged machines keep their state in memory. A removed machine's
pending units are confirmed (trigger ``reload``) and committed before its lease is
released; the units it makes afterwards are no longer this gateway's. An added machine
takes its lease and starts as at a first start (from the ledger's committed state if there
is one, else from its first reading). A changed machine is removed and added in one step
on the event loop: the pending units of its old definition are confirmed, then it counts
on from the same counter positions under the new one. A source whose settings or tags
changed is stopped and started again; its machines keep their positions, so the counter
difference across the new connection is counted once. Values still on their way from a
stopped source are dropped (each source's deliveries carry its generation): the counters
are cumulative, and the next connection reads them again.

This module does I/O orchestration only: every number is decided in ``gateway.domain``.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import Engine

from gateway.domain.confirming import SCRAP_COUNTER, ConfirmRule, Pending, accumulate, confirm, due, timer_spread
from gateway.domain.counting import advance
from gateway.domain.serials import split_at, take_serials
from gateway.domain.records import (
    Anomaly,
    AnomalyKind,
    CounterReading,
    CounterSpec,
    CounterState,
    Quality,
)
from gateway.ledger.queries import OrderDirectory, ResumeState, order_directory, resume_state
from gateway.ledger.writer import Commit, LedgerWriter
from gateway.mapping.model import COUNTER_WIDTH_BITS, Machine, Mapping
from gateway.ledger import leases
from gateway.ledger.leases import LEDGER, MachinesOwned
from gateway.outputs.relay import OutputsProcess
from gateway.ownership import LeaseKeeper, LeaseOptions
from gateway.reloading import MappingChange, checked_mapping, diff_mappings
from gateway.sources import build_sources
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, STATE_ROLE, Source, SourceHealth, TagValue
from gateway.clock import utcnow
from gateway.yamldoc import InputFileError

log = structlog.get_logger("gateway.service")

MAX_ORDER_LENGTH = 64  # the ledger's order-number column
MAX_SERIAL_LENGTH = 64  # the ledger's lot column: a serial is a lot of one unit
SERIALS_REMEMBERED = 100_000  # per machine, to see a repeated serial (the ledger refuses older ones)
SERIALS_WAITING = 10_000  # serials read ahead of the counter, per machine
KNOWN_ORDERS_REFRESH_S = 5.0
# A cancelled source ends in milliseconds (its goodbye to a dead PLC is not worth waiting for).
SOURCES_STOP_TIMEOUT_S = 5.0
RECANCEL_S = 0.5
# Confirmations by the rules per tick (0.25 s): 800/s, well under what the writer posts
# (bench/writer_tx.py: ~6 000/s) so that counter changes never queue behind a burst.
TIMER_CONFIRMATIONS_PER_TICK = 200
WRITER_WATCH_S = 0.5  # how often the service checks that the ledger writer thread is alive
TICK_S = 0.25  # how often the confirm timer checks what is due (also in a dry-run's replay)


@dataclass
class MachineRuntime:
    """In-memory mirror of one machine's ledger state."""

    name: str
    config: Machine
    specs: dict[str, CounterSpec]
    rule: ConfirmRule
    order: str = ""
    states: dict[str, CounterState] = field(default_factory=dict)
    pendings: dict[tuple[str, str], Pending] = field(default_factory=dict)
    job_changed: set[str] = field(default_factory=set)
    job_change_unseen: set[str] = field(default_factory=set)  # of job_changed: changed while not reading
    order_seen: bool = False  # an order value was read since the state was resumed
    state: object = None  # the count_when tag's latest good value; None: not known
    reported_unknown: set[str] = field(default_factory=set)
    reported_bad: set[str] = field(default_factory=set)  # tags in a streak of bad values, reported once
    counted_units: Decimal = Decimal(0)  # since this process started, for progress output
    counted_total: Decimal = Decimal(0)  # ever, as the ledger's counted_units has it plus what is queued
    token: int | None = None  # the lease token this instance posts under; None: not leased
    owned: bool = True  # False: another instance owns it (standby, or lost); its values are not counted
    ignored: dict[str, int] = field(default_factory=dict)  # readings not counted, by why; logged at stop
    serial: str | None = None  # the serial tag's last value; None: not read since the start
    fresh_serials: list[str] = field(default_factory=list)  # new serials not yet given to a counted unit
    used_serials: dict[str, None] = field(default_factory=dict)  # given to a unit or held, oldest first

    @property
    def operation(self) -> str:
        return self.config.operation


def counter_specs(name: str, machine: Machine) -> dict[str, CounterSpec]:
    specs = {}
    for counter, tag in machine.counters:
        if tag is None:
            continue
        upc = tag.units_per_cycle or machine.units_per_cycle
        max_units = machine.plausibility.max_units_per_reading
        specs[counter] = CounterSpec(
            machine=name, counter=counter, width_bits=COUNTER_WIDTH_BITS[tag.type], units_per_count=upc,
            rollover_window=tag.rollover_window,
            max_counts_per_reading=None if max_units is None else max(1, max_units // upc),
            resets_with_job=machine.job_counters == "reset",
        )
    return specs


def _not_producing(rt: MachineRuntime, read_with: frozenset = frozenset()) -> str | None:
    """Why the machine is not producing now (``count_when``), or None while it is.

    ``read_with``: the states before and after a change read in the same snapshot as the
    counter (see the module docstring)."""
    gate = rt.config.count_when
    if gate is None or rt.state in gate.states or any(s in gate.states for s in read_with):
        return None
    allowed = ", ".join(map(str, gate.states))
    if rt.state is None:
        return f"its state is not known (count_when: no good value read yet), counting only in {allowed}"
    return f"state {rt.state!r}, counting only in {allowed}"


def _runtime(name: str, cfg: Machine) -> MachineRuntime:
    return MachineRuntime(name, cfg, counter_specs(name, cfg),
                          ConfirmRule(cfg.confirm.every_units, cfg.confirm.every_seconds,
                                      timer_spread(name, cfg.confirm.effective_jitter_seconds)))


def _redefined(old: MachineRuntime, cfg: Machine) -> MachineRuntime:
    """A machine under its new mapping entry, counting on from the old one's positions.

    Its old pending units were confirmed just before (those of an order not known yet stay
    pending, as they would at a restart)."""
    rt = _runtime(old.name, cfg)
    rt.order = cfg.order if isinstance(cfg.order, str) else old.order
    rt.states, rt.pendings = old.states, old.pendings
    rt.job_changed = old.job_changed & set(rt.specs)
    rt.job_change_unseen = old.job_change_unseen & set(rt.specs)
    rt.order_seen, rt.state = old.order_seen, old.state
    rt.counted_units, rt.counted_total, rt.ignored = old.counted_units, old.counted_total, old.ignored
    rt.token, rt.owned = old.token, old.owned
    rt.serial, rt.fresh_serials, rt.used_serials = old.serial, old.fresh_serials, old.used_serials
    return rt


def _refused(file: str, reason: str, errors: list[str]) -> tuple[str, str]:
    """Log a refused reload, one line per problem and one for the reload: the running mapping stays."""
    for error in errors:
        log.error("mapping_reload_error", file=file, error=error)
    log.error("mapping_reload_refused", file=file, reason=reason, errors=len(errors),
              hint="the running mapping stays; fix the file and reload again")
    return "refused", "\n".join([reason, *errors])


async def open_ledger_when_reachable(url: str, stop: asyncio.Event, *, min_s: float = 0.5,
                                    max_s: float = 30.0, idle_in_transaction_s: float | None = None,
                                    session_name: str | None = None) -> Engine | None:
    """Open (and create) the ledger, retrying with backoff while the database is down.

    A ledger of another schema version raises ``LedgerVersionError`` at once: waiting
    does not fix it, an upgrade does."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.ledger.schema import LedgerVersionError, open_engine
    from gateway.backoff import Backoff

    backoff = Backoff(min_s, max_s)
    while not stop.is_set():
        try:
            return await asyncio.to_thread(open_engine, url, idle_in_transaction_s=idle_in_transaction_s,
                                           session_name=session_name)
        except LedgerVersionError as exc:
            log.error("ledger_version_mismatch", found=exc.found, expected=exc.expected, error=str(exc))
            raise
        except SQLAlchemyError as exc:
            delay = backoff.next()
            log.error("ledger_unreachable", db=url.split("@")[-1], error=str(exc).splitlines()[0],
                      retry_in_s=round(delay, 1), hint="start the database or fix --db; nothing is counted until then")
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
    return None


async def _freeze_long_lived_objects(first_s: float = 15.0, every_s: float = 600.0) -> None:
    """Keep Python's full garbage collection off the hot path.

    With thousands of machines the gateway holds a large heap of long-lived objects
    (clients, subscriptions, machine state); a full collection walks all of it every few
    seconds, finds nothing (5 000 machines: 180–300 ms, every ~2 s, collected=0) and
    stalls the event loop and the ledger writer together. Once the sources are up, and
    then every ``every_s``, everything alive is collected once and frozen: later
    collections walk only newer objects. Unfreezing first each time means a cycle that
    became garbage among the frozen objects (a replaced client) waits at most one period.
    """
    await asyncio.sleep(first_s)
    while True:
        began = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        log.debug("gc_frozen", objects=gc.get_freeze_count(), collected=collected,
                  took_ms=round(1000 * (time.perf_counter() - began)))
        await asyncio.sleep(every_s)


async def _cancel_all(tasks: list[asyncio.Task], timeout_s: float) -> None:
    """Cancel the tasks and wait for them, but not beyond ``timeout_s``.

    A source stuck in a library's teardown must not keep the pending units from being
    confirmed and committed: those come from the counters already read. What is still
    running is named in the log, with its stack, and left to the process exit.

    A task still running is cancelled again every ``RECANCEL_S``: Python 3.11's
    ``asyncio.wait_for`` (inside pymodbus' and asyncua's requests) can lose a cancellation
    that arrives together with its answer, and the source then polls on — after a reload, for
    as long as the gateway runs (seen: a Modbus source still polling 5 s after its cancel).
    """
    stuck = set(tasks)
    deadline = time.monotonic() + timeout_s
    while stuck:
        for task in stuck:
            task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, stuck = await asyncio.wait(stuck, timeout=min(RECANCEL_S, left))
    for task in stuck:
        stack = io.StringIO()
        task.print_stack(file=stack)
        log.error("task_did_not_stop", task=task.get_name(), waited_s=timeout_s, stack=stack.getvalue(),
                  hint="a library ignored the cancellation; the gateway goes on stopping without it")


def _newer_than_committed(rt: MachineRuntime, tv: TagValue) -> bool:
    """A value read after what the last owner committed for the machine, so worth replaying.

    A value the standby read earlier (before the owner's last commit, or before its own link
    to the PLC went down) would be counted against a newer position: a counter going back
    reads as a PLC reset, an old order as an order change. The next value read is counted
    from the committed position instead.
    """
    newest = max((s.source_time for s in rt.states.values()), default=None)
    if tv.role == ORDER_ROLE:
        return newest is None or tv.source_time > newest
    state = rt.states.get(tv.role)
    return state is None or (tv.source_time > state.source_time
                             and not (isinstance(tv.value, int) and tv.value < state.position.raw))


class Gateway:
    def __init__(self, mapping: Mapping, engine: Engine, *, clock: Callable[[], datetime] = utcnow,
                 stats: str | None = None, lease: LeaseOptions | None = None,
                 mapping_file: str | os.PathLike[str] | None = None,
                 reload_requests: asyncio.Event | None = None) -> None:
        self.mapping = mapping
        # Where ``mapping`` was read from, read again whenever ``reload_requests`` is set (SIGHUP).
        self.mapping_file = mapping_file
        self._reload_requests = reload_requests
        self.engine = engine
        self.clock = clock
        # Without ``lease`` (tests, the demo's own ledger) nothing is fenced: one process only.
        self.keeper = None if lease is None else LeaseKeeper(
            engine, list(mapping.machines), lease, last_commit=lambda: self.writer.health.last_commit_at)
        self.writer = LedgerWriter(engine, stats=stats,  # stats: JSON line per transaction (benchmarks)
                                   fence=self.keeper.fence if self.keeper else None,
                                   on_fenced=self._lost_from_thread)
        self.last_seen: dict[tuple[str, str], TagValue] = {}  # (machine, role) → latest value, owned or not
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper_died = False
        self.machines: dict[str, MachineRuntime] = {}
        self.orders = OrderDirectory()  # units are confirmed against open orders only
        self.sources: list[Source] = []
        self._running: dict[str, tuple[Source, asyncio.Task]] = {}  # source name → source, its task
        self._generation: dict[str, int] = {}  # source name → the generation whose values are applied
        self._known_checked_at = 0.0
        self._started = asyncio.Event()
        self._closed = False  # sources stopped (or given up on): no batch is applied after this
        self._timer_turn = 0  # where the next tick's due-check starts (see _confirm_all)
        self.outputs = OutputsProcess(engine, mapping, self.writer)  # started by run()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, shutdown_timeout_s: float = 30.0) -> bool:
        """Run until ``stop`` is set; True if everything counted was committed at the end.

        With leases, raises ``MachinesOwned`` before anything starts when another live
        instance owns machines of this mapping (and this one is not a standby).
        """
        self._loop = asyncio.get_running_loop()
        tokens = await asyncio.to_thread(self.keeper.start) if self.keeper else None
        await asyncio.to_thread(self._restore)  # after the leases: what the last owner committed
        if tokens is not None:
            for name, rt in self.machines.items():
                rt.token, rt.owned = tokens.get(name), name in tokens
        self.writer.start()
        await self._start_outputs()
        self._start_sources(list(self.mapping.sources))
        tasks = []
        if self.keeper:
            keeper = asyncio.create_task(self.keeper.keep(self._taken, self._lost), name="leases")
            keeper.add_done_callback(lambda task: self._keeper_ended(task, stop))
            tasks.append(keeper)
        ticker = asyncio.create_task(self._tick_forever(), name="confirm-timer")
        housekeeping = asyncio.create_task(_freeze_long_lived_objects(), name="gc-freeze")
        watchdog = asyncio.create_task(self._watch_writer(stop), name="writer-watchdog")
        reloader = asyncio.create_task(self._reload_when_asked(), name="mapping-reload")
        self._started.set()
        log.info("gateway_started", machines=len(self.machines), sources=len(self._running))
        try:
            await stop.wait()
        finally:
            await _cancel_all([reloader], SOURCES_STOP_TIMEOUT_S)  # first: it may start sources
            await _cancel_all([*(task for _, task in self._running.values()), *tasks, ticker, housekeeping, watchdog],
                              SOURCES_STOP_TIMEOUT_S)
            await self.outputs.stop()  # what is not delivered stays in the outbox for the next start
            self._closed = True
            self._confirm_all("shutdown")
            stopped = await asyncio.to_thread(self.writer.stop, shutdown_timeout_s)
            held = self.writer.health.held_machines
            done = stopped and not held
            log.info("gateway_stopped", committed=done, **self.writer.health.__dict__,
                     ignored_readings={m: rt.ignored for m, rt in self.machines.items() if rt.ignored})
            if not stopped:
                log.error("shutdown_timeout" if self.writer.alive else "shutdown_without_writer",
                          last_error=self.writer.health.last_error,
                          hint="the last changes were not committed; the units they cover are recounted from "
                               "the PLC counters at the next start")
            elif held:
                log.error("machines_held", machines=held,
                          hint="changes of these machines could not be stored (see dead_letters); their units "
                               "from the held position on are recounted from the PLC counters at the next start")
            if self.keeper:
                await self._release()
        return done and not self._keeper_died

    async def _start_outputs(self) -> None:
        """The delivery workers of ``outputs:`` in the outbox relay process (gateway.outputs.relay), their
        marks committed by this gateway's writer, woken by every commit."""
        session = f"{leases.session_name(self.keeper.me.process)}:outputs" if self.keeper else None
        self.outputs = OutputsProcess(self.engine, self.mapping, self.writer, owned=self._owned_machines,
                                      session=session)
        await self.outputs.start()
        if self.mapping.outputs:
            loop = asyncio.get_running_loop()
            self.writer.after_commit.append(lambda _done: loop.call_soon_threadsafe(self.outputs.wake))

    def _owned_machines(self) -> set[str] | None:
        """Whose outbox rows this instance delivers: the machines it owns; None without leases (all)."""
        return None if self.keeper is None else {n for n, rt in self.machines.items() if rt.owned}

    async def _watch_writer(self, stop: asyncio.Event, every_s: float = WRITER_WATCH_S) -> None:
        """Stop the gateway (run() then returns False) if the ledger writer thread has ended."""
        while self.writer.alive:
            await asyncio.sleep(every_s)
        log.critical("ledger_writer_dead", last_error=self.writer.health.last_error,
                     hint="nothing counted is written any more; the gateway stops with a failure. The units "
                          "since the last commit are recounted from the PLC counters at the next start")
        stop.set()

    def _keeper_ended(self, task: asyncio.Task, stop: asyncio.Event) -> None:
        """Without its lease keeper the gateway would lose its machines one by one: stop, failing."""
        if task.cancelled() or stop.is_set():
            return
        self._keeper_died = True
        log.critical("lease_keeper_died", error=repr(task.exception()),
                     hint="leases are no longer renewed; the gateway stops with a failure so that a standby or a "
                          "restart takes the machines over")
        stop.set()

    async def _release(self) -> None:
        """Let a standby take over at once (a later posting of ours would be fenced anyway)."""
        try:
            await asyncio.to_thread(self.keeper.release)
        except Exception as exc:  # noqa: BLE001 — the leases then expire by themselves
            log.warning("leases_not_released", error=str(exc).splitlines()[0],
                        hint=f"they expire within {self.keeper.options.ttl_s:g} s; a standby takes over then")

    def _restore(self) -> None:
        resumed = resume_state(self.engine)
        self.orders = order_directory(self.engine)
        for name, cfg in self.mapping.machines.items():
            rt = self.machines[name] = _runtime(name, cfg)
            self._resume(rt, resumed)

    def _resume(self, rt: MachineRuntime, resumed: ResumeState) -> None:
        name, cfg = rt.name, rt.config
        rt.order = cfg.order if isinstance(cfg.order, str) else resumed.machine_orders.get(name, "")
        rt.states = {c: s for (m, c), s in resumed.counter_states.items() if m == name}
        rt.pendings = {(p.order, p.operation): p for k, p in resumed.pendings.items() if k[0] == name}
        pending, unseen = resumed.job_resets.get(name, (frozenset(), frozenset()))
        rt.job_changed, rt.job_change_unseen = set(pending) & set(rt.specs), set(unseen) & set(rt.specs)
        rt.order_seen, rt.state = False, None
        rt.counted_total = resumed.counted.get(name, Decimal(0))
        log.info("machine_resumed", machine=name, order=rt.order or None, operation=cfg.operation,
                 counters={c: str(s.position) for c, s in rt.states.items()},
                 pending_units=str(sum((p.units for p in rt.pendings.values()), Decimal(0))))

    # -- ownership -------------------------------------------------------------------

    async def _taken(self, tokens: dict[str, int]) -> None:
        """Machines taken over: their state as the last owner committed it, then the latest values."""
        resumed = await asyncio.to_thread(resume_state, self.engine, list(tokens))
        for name, token in tokens.items():
            rt = self.machines.get(name)
            if rt is None:  # taken out of the mapping by a reload meanwhile; its lease is let go
                continue
            self._resume(rt, resumed)
            rt.token, rt.owned = token, True
            log.warning("machine_taken_over", machine=name, token=token, instance=self.keeper.me.instance)
            latest = [tv for (m, _), tv in self.last_seen.items() if m == name and _newer_than_committed(rt, tv)]
            try:
                # The order first: units counted from here belong to the order running now.
                self.on_batch(sorted(latest, key=lambda tv: tv.role not in (ORDER_ROLE, STATE_ROLE)))
            except Exception as exc:  # noqa: BLE001 — the machine is ours; the next value is counted as usual
                log.error("takeover_replay_failed", machine=name, error=str(exc).splitlines()[0])

    def _lost(self, lost: dict[str, int]) -> None:
        """Machines another instance owns now: forget them; nothing of theirs is posted from here."""
        for name in sorted(self.keeper.forget(lost)):
            rt = self.machines.get(name)
            if rt is None:  # taken out of the mapping by a reload
                continue
            rt.token, rt.owned = None, False
            rt.states, rt.pendings, rt.job_changed, rt.job_change_unseen = {}, {}, set(), set()
            log.error("machine_lost", machine=name, instance=self.keeper.me.instance,
                      hint="another instance owns this machine now; this one stands by and takes it over "
                           "again if that lease expires")

    def _lost_from_thread(self, lost: dict[str, int]) -> None:
        """The writer's fence found machines lost (called in the writer thread)."""
        if self._loop is None or self.keeper is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._lost, lost)
        except RuntimeError:  # the loop has closed: the process is ending, nothing to forget
            pass

    # -- sources ---------------------------------------------------------------------

    def _start_sources(self, names: list[str] | tuple[str, ...]) -> None:
        """Start reading these sources of ``self.mapping`` (those with machines), each in a task."""
        for name in names:
            config = self.mapping.sources.get(name)
            if config is None:
                continue
            generation = self._generation[name] = self._generation.get(name, 0) + 1

            def deliver(values: list[TagValue], name: str = name, generation: int = generation) -> None:
                if self._generation.get(name) == generation:  # not from a source stopped by a reload
                    self.on_batch(values)

            for src in build_sources(self.mapping.model_copy(update={"sources": {name: config}}), deliver):
                self._running[name] = (src, asyncio.create_task(src.run(), name=f"source:{name}"))
        self.sources = [src for src, _ in self._running.values()]

    async def _stop_sources(self, names: list[str] | tuple[str, ...]) -> None:
        """Stop reading these sources; whatever they still deliver is dropped."""
        stopping = [self._running.pop(name)[1] for name in names if name in self._running]
        for name in names:
            self._generation[name] = self._generation.get(name, 0) + 1
        self.sources = [src for src, _ in self._running.values()]
        if stopping:
            await _cancel_all(stopping, SOURCES_STOP_TIMEOUT_S)

    # -- reloading the mapping --------------------------------------------------------

    async def _reload_when_asked(self) -> None:
        if self._reload_requests is None:
            return
        while True:
            await self._reload_requests.wait()
            self._reload_requests.clear()  # a request during this reload makes one more, after it
            try:
                await self.reload()
            except Exception:  # noqa: BLE001 — the gateway counts on; the next request tries again
                log.exception("mapping_reload_failed", file=str(self.mapping_file))

    async def reload(self, requested_by: str = "signal") -> tuple[str, str]:
        """Read the mapping file again and apply it, or refuse it: ("applied" | "refused", detail).

        The outcome answers the ``gateway reload`` requests open when the reload began (they
        were made before the file was read); without one it is recorded as ``requested_by``."""
        requests = await self._reload_step(leases.open_reload_requests, [])
        outcome, detail = await self._reload()
        await self._reload_step(leases.reload_done, None, requests, outcome, detail, requested_by)
        return outcome, detail

    async def _reload_step(self, step, failed, *args):
        """A ``leases`` step on the reload requests; without leases (no instance) there are none."""
        if self.keeper is None:
            return failed

        def run():
            with self.engine.begin() as conn:
                return step(conn, self.keeper.me, *args)

        try:
            return await asyncio.to_thread(run)
        except Exception as exc:  # noqa: BLE001 — the reload itself does not depend on it
            log.warning("mapping_reload_not_recorded", error=str(exc).splitlines()[0],
                        hint="`gateway reload` waits in vain for this answer; the log has the outcome")
            return failed

    async def _reload(self) -> tuple[str, str]:
        file = str(self.mapping_file)
        log.info("mapping_reload_started", file=file)
        try:
            new = await asyncio.to_thread(checked_mapping, self.mapping_file)
        except InputFileError as exc:
            return _refused(file, "the mapping has errors", exc.lines())
        except OSError as exc:
            return _refused(file, "the mapping cannot be read", [f"{file}: {exc.strerror or exc}"])
        change = diff_mappings(self.mapping, new)
        tokens: dict[str, int] = {}
        if self.keeper is not None and change.added:
            try:
                tokens = await self.keeper.take(list(change.added))
            except MachinesOwned as exc:
                return _refused(file, "machines it adds are owned by another running gateway", [
                    f"{h.machine}: instance {h.instance!r} on host {h.host}, pid {h.pid}"
                    for h in exc.holders])
            except Exception as exc:  # noqa: BLE001 — the database; nothing has changed
                return _refused(file, "the leases of the machines it adds cannot be taken",
                                [str(exc).splitlines()[0]])
        try:
            resumed = await asyncio.to_thread(resume_state, self.engine, list(change.added)) if change.added else None
        except Exception as exc:  # noqa: BLE001 — the database; nothing has changed but the new leases
            if self.keeper is not None:
                await self.keeper.let_go(list(change.added))
            return _refused(file, "the committed state of the machines it adds cannot be read",
                            [str(exc).splitlines()[0]])
        await self._stop_sources(change.sources_rebuilt)
        outputs_changed = new.outputs != self.mapping.outputs
        self._apply(new, change, resumed, tokens)
        if outputs_changed:
            await self.outputs.reload(new)
        self._start_sources([*change.sources_reconnected, *change.sources_started])
        if change.removed and self.keeper is not None:
            await self.committed()  # their last confirmations are in the ledger before anyone may take them
            await self.keeper.let_go(list(change.removed))
        log.info("mapping_reloaded", file=file, added=list(change.added), removed=list(change.removed),
                 changed=list(change.changed), unchanged=len(change.unchanged),
                 sources_reconnected=list(change.sources_reconnected),
                 sources_started=list(change.sources_started), sources_stopped=list(change.sources_stopped))
        return "applied", change.summary()

    def _apply(self, new: Mapping, change: MappingChange, resumed: ResumeState | None,
               tokens: dict[str, int]) -> None:
        """The new mapping's machines, in one step on the event loop (no value comes in between)."""
        commit = Commit()
        now = self.clock()
        for name in (*change.removed, *change.changed):
            rt = self.machines[name]
            if rt.owned:  # the old definition's units, confirmed as at shutdown
                self._confirm_machine(rt, commit, now, trigger="reload")
        self._submit(commit)  # fenced by their tokens, before any of them changes
        for name in change.removed:
            del self.machines[name]
            for key in [k for k in self.last_seen if k[0] == name]:
                del self.last_seen[key]
        if self.keeper is not None:
            self.keeper.drop(list(change.removed))  # no longer renewed; released once committed
        for name in change.changed:
            self.machines[name] = _redefined(self.machines[name], new.machines[name])
        for name in change.added:
            rt = self.machines[name] = _runtime(name, new.machines[name])
            self._resume(rt, resumed)
            if self.keeper is not None:
                rt.token, rt.owned = tokens.get(name), name in tokens
        self.mapping = new

    async def _tick_forever(self, interval_s: float = TICK_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._refresh_known_orders()  # orders loaded or completed from the CLI meanwhile
            self._confirm_all(None)

    async def _refresh_known_orders(self) -> None:
        if time.monotonic() - self._known_checked_at < KNOWN_ORDERS_REFRESH_S:
            return
        self._known_checked_at = time.monotonic()
        try:
            self.orders = await asyncio.to_thread(order_directory, self.engine)
        except Exception as exc:  # noqa: BLE001 — a read; retried at the next tick
            log.warning("known_orders_refresh_failed", error=str(exc))

    # -- processing ------------------------------------------------------------------

    def on_batch(self, values: list[TagValue]) -> None:
        """Apply one batch of tag values from a source (in the order given)."""
        if self._closed:
            # A source that outlived the shutdown: its counts stay on the PLC counter, whose
            # committed position is older, so the next start counts them. Nothing is lost.
            return
        commit = Commit(source_times=[] if self.writer.recording else None)
        now = self.clock()
        self._first_states(values)
        snapshots = self._state_snapshots(values)
        try:
            for tv in values:
                rt = self.machines.get(tv.machine)
                if rt is None:
                    continue
                self.last_seen[(tv.machine, tv.role)] = tv
                if not rt.owned:
                    continue  # another instance counts it; these units are its to confirm
                if tv.role == ORDER_ROLE:
                    self._order_value(rt, tv, commit, now)
                elif tv.role == STATE_ROLE:
                    rt.state = tv.value if tv.quality is Quality.GOOD else None
                elif tv.role == SERIAL_ROLE:
                    self._serial_value(rt, tv, commit)
                else:
                    self._counter_value(rt, tv, commit, now, snapshots.get((tv.machine, tv.source_time), frozenset()))
        finally:
            # What was applied in memory must reach the ledger even if a later value raised.
            self._submit(commit)

    def _state_snapshots(self, values: list[TagValue]) -> dict[tuple[str, datetime], frozenset]:
        """Per machine and source time of a state change in ``values``: the state before it and after."""
        running: dict[str, object] = {}
        out: dict[tuple[str, datetime], set] = {}
        for tv in values:
            rt = self.machines.get(tv.machine)
            if tv.role == STATE_ROLE and rt is not None and tv.quality is Quality.GOOD:
                out.setdefault((tv.machine, tv.source_time), {running.get(tv.machine, rt.state)}).add(tv.value)
                running[tv.machine] = tv.value
        return {key: frozenset(states) for key, states in out.items()}

    def _first_states(self, values: list[TagValue]) -> None:
        """A machine whose state is not known yet takes it from this batch, wherever in it.

        The first batch after a (re)connect has every tag's current value, the state tag's
        often after the counters (it changed last); the counts made meanwhile are judged by
        the state the machine is in now, the only one known, rather than held for want of it.
        """
        for tv in values:
            rt = self.machines.get(tv.machine)
            if tv.role == STATE_ROLE and rt is not None and rt.state is None and tv.quality is Quality.GOOD:
                rt.state = tv.value

    def _submit(self, commit: Commit) -> None:
        """Hand a change-set to the writer, fenced by the lease token of each machine it touches."""
        if commit and self.keeper is not None:
            commit.fences = {m: self.machines[m].token for m in commit.machines()}
            if self.keeper.whole:
                commit.fences[LEDGER] = self.keeper.tokens.get(LEDGER)
        self.writer.submit(commit)

    def _order_value(self, rt: MachineRuntime, tv: TagValue, commit: Commit, now: datetime) -> None:
        if tv.quality is not Quality.GOOD:
            return
        order = str(tv.value).strip() if isinstance(tv.value, str | int) and not isinstance(tv.value, bool) else None
        if order is None or len(order) > MAX_ORDER_LENGTH or not order.isprintable():
            self._bad_value(rt, tv, commit, f"order tag delivered {tv.value!r:.80}, expected an order number of "
                            f"at most {MAX_ORDER_LENGTH} printable characters; the machine keeps order "
                            f"{rt.order!r} — check the order tag in the PLC and the mapping")
            return
        rt.reported_bad.discard(tv.role)
        # The first order read since the last committed state: a different one changed
        # while nobody was reading, so the old job's last counts were never read.
        unseen, rt.order_seen = not rt.order_seen and bool(rt.order), True
        if order == rt.order:
            return
        log.info("order_changed", machine=rt.name, order=order or None, previous=rt.order or None,
                 while_not_reading=unseen)
        self._confirm_machine(rt, commit, now, trigger="order_change", only_order=rt.order)
        # From no order at all (a first start) the counters' baselines were read on this job
        # already: only a change from one known order to another is a job change.
        changed = set(rt.specs) if rt.order else set()
        rt.order = order
        rt.job_changed = changed
        rt.job_change_unseen = changed if unseen else set()
        commit.machine_orders[rt.name] = order
        commit.job_resets[rt.name] = (frozenset(rt.job_changed), frozenset(rt.job_change_unseen))

    def _serial_value(self, rt: MachineRuntime, tv: TagValue, commit: Commit) -> None:
        if tv.quality is not Quality.GOOD:
            return
        value = tv.value
        serial = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
        if serial is None or len(serial) > MAX_SERIAL_LENGTH or not serial.isprintable():
            self._bad_value(rt, tv, commit, f"serial tag delivered {value!r:.80}, expected a serial of at most "
                            f"{MAX_SERIAL_LENGTH} printable characters; the unit it was written for gets none "
                            "and is held — check the serial tag in the PLC and the mapping")
            return
        rt.reported_bad.discard(tv.role)
        previous, rt.serial = rt.serial, serial
        if previous is None or serial == previous or not serial:
            return  # the serial of a unit counted before this start; the same value read again; a cleared tag
        rt.fresh_serials.append(serial)
        del rt.fresh_serials[:-SERIALS_WAITING]

    def _with_serials(self, rt: MachineRuntime, tv: TagValue, increment, units: Decimal, commit: Commit):
        """The good units that have a serial (an increment, its units, their serials); the rest are held."""
        took = take_serials(rt.fresh_serials, int(units), rt.used_serials)
        del rt.fresh_serials[:len(took.serials) + len(took.repeated)]
        for serial in took.serials + took.repeated:
            rt.used_serials[serial] = None
        while len(rt.used_serials) > SERIALS_REMEMBERED:
            del rt.used_serials[next(iter(rt.used_serials))]
        if not took.held:
            return increment, units, took.serials
        spec = rt.specs[tv.role]
        with_serial, held_from = split_at(increment, len(took.serials), spec.modulus)
        kind = AnomalyKind.SERIAL_REPEATED if took.repeated else AnomalyKind.SERIAL_MISSING
        why = []
        if took.missing:
            why.append(f"{took.missing} with no new serial written for it")
        if took.repeated:
            why.append(f"{len(took.repeated)} whose serial was used before ({', '.join(took.repeated[:5])})")
        detail = (f"{took.held} good unit(s) of order {rt.order or '(none)'} without a serial of their own: "
                  f"{'; '.join(why)}; held, not received — accept to post them without serials "
                  "(the material's serial pattern numbers them), or reject")
        self._anomaly(rt, Anomaly(rt.name, tv.role, kind, detail, increment.source_time, held_from, increment.end,
                                  counts_held=took.held), commit, Decimal(took.held))
        rt.counted_total += took.held
        commit.counted[rt.name] = rt.counted_total
        return with_serial, Decimal(len(took.serials)), took.serials

    def _counter_value(self, rt: MachineRuntime, tv: TagValue, commit: Commit, now: datetime,
                       state_read_with: frozenset = frozenset()) -> None:
        spec = rt.specs.get(tv.role)
        if spec is None:
            return
        value, quality = tv.value, tv.quality
        if quality is Quality.GOOD and (isinstance(value, bool) or not isinstance(value, int)):
            self._bad_value(rt, tv, commit, f"counter tag delivered {type(value).__name__} {value!r:.80}, "
                            "expected an unsigned integer; reading ignored — check the node id and type in the mapping")
            return
        reading = CounterReading(rt.name, tv.role, value if quality is Quality.GOOD else None,
                                 tv.source_time, quality, tv.received_at)
        step = advance(rt.states.get(tv.role), reading, spec, job_changed=tv.role in rt.job_changed,
                       job_change_unseen=tv.role in rt.job_change_unseen,
                       not_producing=_not_producing(rt, state_read_with))
        if step.ignored and step.ignored.startswith("quality"):
            rt.ignored[step.ignored] = rt.ignored.get(step.ignored, 0) + 1
            return
        if tv.role in rt.job_changed:  # its first value after the order change is taken: committed with it
            rt.job_changed.discard(tv.role)
            rt.job_change_unseen.discard(tv.role)
            commit.job_resets[rt.name] = (frozenset(rt.job_changed), frozenset(rt.job_change_unseen))
        if step.ignored != "out_of_range":
            rt.reported_bad.discard(tv.role)
        if step.state is not None and step.state != rt.states.get(tv.role):
            rt.states[tv.role] = step.state
            commit.counter_states[(rt.name, tv.role)] = step.state
            commit.readings += 1
            if commit.oldest_source is None or tv.source_time < commit.oldest_source:
                commit.oldest_source = tv.source_time
            if commit.newest_source is None or tv.source_time > commit.newest_source:
                commit.newest_source = tv.source_time
            if commit.source_times is not None:
                commit.source_times.append(tv.source_time)
        # Scrap that is part of the machine's total: its units are counted (or held) with the
        # total's; counting the scrap moves them from yield to scrap, holding it holds none.
        in_total = tv.role == SCRAP_COUNTER and rt.config.counters.total is not None
        if step.anomaly is not None and step.anomaly.kind is AnomalyKind.BAD_VALUE:
            self._bad_value(rt, tv, commit, step.anomaly.detail)
        elif step.anomaly is not None:
            held = Decimal(0 if in_total else step.anomaly.counts_held * spec.units_per_count)
            self._anomaly(rt, step.anomaly, commit, held)
            if held:  # counted, and held for a decision: accepted → confirmed, rejected → written off
                rt.counted_total += held
                commit.counted[rt.name] = rt.counted_total
        if step.increment is not None and step.increment.counts > 0:
            units = Decimal(step.increment.counts * spec.units_per_count)
            if not in_total:
                rt.counted_units += units
            increment, serials = step.increment, ()
            if rt.config.serial is not None and tv.role == "good":
                increment, units, serials = self._with_serials(rt, tv, increment, units, commit)
                if not units:
                    return
            if not in_total:
                rt.counted_total += units
                commit.counted[rt.name] = rt.counted_total
            key = (rt.order, rt.operation)
            pending = accumulate(rt.pendings.get(key), increment, units, order=rt.order, operation=rt.operation,
                                 now=now, scrap_in_total=rt.config.counters.total is not None, serials=serials)
            rt.pendings[key] = pending
            commit.pendings[pending.key] = pending
            if rt.order not in self.orders.uoms:
                self._unknown_order(rt, tv, commit)
            else:
                self._check_work_center(rt, tv, commit)
                # A count threshold confirms here; an expired timer is left to the tick,
                # which takes due timers in capped turns (see _confirm_all).
                if due(pending, rt.rule, now) == "every_units":
                    self._confirm(rt, key, "every_units", commit)

    def _bad_value(self, rt: MachineRuntime, tv: TagValue, commit: Commit, detail: str) -> None:
        """Record the first bad value of a streak; the rest of the streak only counts."""
        rt.ignored["bad_value"] = rt.ignored.get("bad_value", 0) + 1
        if tv.role in rt.reported_bad:
            return
        rt.reported_bad.add(tv.role)
        self._anomaly(rt, Anomaly(rt.name, tv.role, AnomalyKind.BAD_VALUE, detail, tv.source_time),
                      commit, Decimal(0))

    def _unknown_order(self, rt: MachineRuntime, tv: TagValue, commit: Commit) -> None:
        if rt.order in rt.reported_unknown:
            return
        rt.reported_unknown.add(rt.order)
        if rt.order in self.orders.closed:
            detail = (f"order {rt.order!r} is completed; counted units are kept pending, not posted — "
                      "put the machine on an open order")
        else:
            what = f"order {rt.order!r} is not in the master data" if rt.order else "no order number on the machine"
            detail = (f"{what}; counted units are kept pending and confirmed once the order is loaded "
                      "(`gateway masterdata load`)")
        self._anomaly(rt, Anomaly(rt.name, None, AnomalyKind.UNKNOWN_ORDER, detail, tv.source_time,
                                  order=rt.order), commit, Decimal(0))

    def _check_work_center(self, rt: MachineRuntime, tv: TagValue, commit: Commit) -> None:
        """Activities are costed at the routing's work center; say so once if it is not the machine's."""
        planned = self.orders.work_centers.get((rt.order, rt.operation))
        key = f"work center of {rt.order}"
        if planned in (None, rt.config.work_center) or key in rt.reported_unknown:
            return
        rt.reported_unknown.add(key)
        self._anomaly(rt, Anomaly(
            rt.name, None, AnomalyKind.WORK_CENTER_MISMATCH,
            f"operation {rt.operation} of order {rt.order} runs on {planned}, but this machine is on "
            f"{rt.config.work_center}; units are confirmed and activities costed at {planned} — check the "
            "machine's operation in the mapping or the order's routing", tv.source_time), commit, Decimal(0))

    def _anomaly(self, rt: MachineRuntime, anomaly: Anomaly, commit: Commit, units_held: Decimal) -> None:
        log.warning("anomaly", machine=rt.name, order=rt.order or None, operation=rt.operation,
                    counter=anomaly.counter, kind=anomaly.kind.value, detail=anomaly.detail,
                    units_held=str(units_held))
        commit.anomalies.append((anomaly, units_held))

    # -- confirming ------------------------------------------------------------------

    def _confirm(self, rt: MachineRuntime, key: tuple[str, str], trigger: str, commit: Commit) -> None:
        pending = rt.pendings.pop(key)
        confirmation = confirm(pending, trigger, self.orders.uoms[pending.order])
        commit.confirmations.append(confirmation)
        commit.pendings[pending.key] = None

    def _confirm_machine(self, rt: MachineRuntime, commit: Commit, now: datetime, *,
                         trigger: str | None, only_order: str | None = None) -> None:
        """Confirm what is due (``trigger=None``: by the rules) for known orders."""
        for key, pending in list(rt.pendings.items()):
            if pending.order not in self.orders.uoms or (only_order is not None and pending.order != only_order):
                continue
            why = trigger or ("order_change" if pending.order != rt.order else due(pending, rt.rule, now))
            if why:
                self._confirm(rt, key, why, commit)

    def _confirm_all(self, trigger: str | None) -> None:
        """Confirm what the rules say is due (``None``, every tick) or everything (shutdown).

        By the rules, at most ``TIMER_CONFIRMATIONS_PER_TICK`` per tick, machines taken in
        turn: when thousands of timers expire together, their confirmations go to the
        ledger over a few ticks instead of one transaction that holds back every counter
        change queued behind it. Units wait as pending meanwhile (committed, not lost).
        """
        commit = Commit()
        now = self.clock()
        machines = list(self.machines.values())
        start = self._timer_turn % len(machines) if machines else 0
        for i, rt in enumerate(machines[start:] + machines[:start]):
            if trigger is None and len(commit.confirmations) >= TIMER_CONFIRMATIONS_PER_TICK:
                self._timer_turn = start + i  # the next tick starts with this machine
                break
            if rt.owned:
                self._confirm_machine(rt, commit, now, trigger=trigger)
        self._submit(commit)

    # -- replaying a recording (gateway dry-run) -----------------------------------------
    # The same machines, decisions and writer as ``run``, without sources, leases or the
    # tick task: the caller feeds recorded batches to ``on_batch`` and calls ``tick`` where
    # the confirm timer would have run, with ``clock`` showing the recorded time.

    def open_replay(self) -> None:
        """Restore the machines from the ledger and start the writer (no sources)."""
        self._restore()
        self.writer.start()
        self._started.set()

    def tick(self) -> None:
        """What the confirm timer does every ``TICK_S``: confirm what the rules say is due."""
        self._confirm_all(None)

    def close_replay(self, timeout_s: float = 30.0) -> bool:
        """As at shutdown: confirm every pending unit of a known order, commit; True if committed."""
        self._closed = True
        self._confirm_all("shutdown")
        return self.writer.stop(timeout_s) and not self.writer.health.held_machines

    async def committed(self) -> None:
        """Wait until everything handed to the writer so far is in the ledger."""
        await asyncio.wrap_future(self.writer.barrier())

    async def started(self) -> None:
        await self._started.wait()

    # -- read-only views (HTTP status, metrics) -----------------------------------------

    @property
    def has_started(self) -> bool:
        """``run`` got as far as starting the writer and the sources (it may have stopped since)."""
        return self._started.is_set()

    @property
    def running(self) -> bool:
        """Started (machines restored, sources and writer running) and not yet stopping."""
        return self._started.is_set() and not self._closed

    def source_health(self) -> dict[str, SourceHealth]:
        """Each source's connection as it is now (empty before the sources are built)."""
        return {src.name: src.health for src in self.sources}
