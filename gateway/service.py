"""The supervisor: sources → machines → one ledger writer.

``Gateway`` wires the parts and supervises them: it builds and starts the sources, owns
the machines (``gateway.machine.MachineRuntime``: each one's counter states and units
pending per order operation) and the ledger writer. Each batch of tag values from a
source is applied in order (an order-number change before the counter values that
follow it), machine by machine, and the resulting changes go to the ``LedgerWriter`` as
one ``ChangeSet``. The writer commits them together, so what is in the ledger is always a
consistent point to resume from. A confirm timer (every ``TICK_S``) confirms what the
machines' rules say is due, in capped turns.

A machine in repetitive mode (``order: none`` with ``product:``) has no order: its order is
the cost collector of its product, version, line and the posting period the clock is in
(``gateway.repetitive``). When the period ends (seen at its next value or the next tick), it
moves to the next period's collector like an order change: what the old collector has
pending is confirmed to it (trigger ``period_change``), new units go to the new one, and the
move is committed with the machine's state. The writer creates a collector with the first
change-set that uses it.

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

This module does I/O orchestration and supervision only: what a value does to a machine is
``gateway.machine``'s, every number and every decision to confirm is ``gateway.domain``'s.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy import Engine

from gateway.clock import utcnow
from gateway.domain.confirming import Moment
from gateway.inputfile.errors import InputFileError
from gateway.ledger import leases
from gateway.ledger.changes import ChangeSet
from gateway.ledger.leases import LEDGER, MachinesOwned
from gateway.ledger.resume import OrderDirectory, ResumeState, order_directory, resume_state
from gateway.ledger.stats import StatsFile
from gateway.ledger.writer import DEFAULT_GATHER_S, LedgerWriter
from gateway.machine import MachineRuntime, first_states, state_snapshots
from gateway.mapping.model import Mapping
from gateway.outputs.relay import OutputsProcess
from gateway.ownership import LeaseKeeper, LeaseOptions
from gateway.reloading import MappingChange, checked_mapping, diff_mappings
from gateway.repetitive import Collectors
from gateway.sources import build_sources
from gateway.sources.base import ORDER_ROLE, STATE_ROLE, Source, SourceHealth, TagValue

log = structlog.get_logger("gateway.service")

KNOWN_ORDERS_REFRESH_S = 5.0
# A cancelled source ends in milliseconds (its goodbye to a dead PLC is not worth waiting for).
SOURCES_STOP_TIMEOUT_S = 5.0
RECANCEL_S = 0.5
# Confirmations by the rules per tick (0.25 s): 800/s, well under what the writer posts
# (bench/writer_tx.py: ~6 000/s) so that counter changes never queue behind a burst.
TIMER_CONFIRMATIONS_PER_TICK = 200
WRITER_WATCH_S = 0.5  # how often the service checks that the ledger writer thread is alive
TICK_S = 0.25  # how often the confirm timer checks what is due (also in a dry-run's replay)


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


async def _freeze_long_lived_objects(early_s: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
                                     every_s: float = 600.0) -> None:
    """Keep Python's full garbage collection off the hot path.

    With thousands of machines the gateway holds a large heap of long-lived objects
    (clients, subscriptions, machine state); a full collection walks all of it every few
    seconds, finds nothing (5 000 machines: 180–300 ms, every ~2 s, collected=0) and
    stalls the event loop and the ledger writer together. Frozen objects are not walked:
    ``early_s`` after the start (while the sources connect and subscribe) what is alive is
    frozen after a collection of the young generations only (on Python 3.11–3.13 it walks
    nothing old), so a freeze costs no stall. Every ``every_s`` everything is unfrozen,
    collected in full and frozen again (that walk is the one stall, once a period): a cycle
    that became garbage among the frozen objects (a replaced client, or startup garbage an
    early freeze kept) waits at most until the next full collection.
    """
    waited = 0.0
    for at in early_s:
        await asyncio.sleep(max(0.0, at - waited))
        waited = at
        began = time.perf_counter()
        collected = gc.collect(1)
        gc.freeze()
        log.debug("gc_frozen", objects=gc.get_freeze_count(), collected=collected, full=False,
                  took_ms=round(1000 * (time.perf_counter() - began)))
    while True:
        await asyncio.sleep(every_s)
        began = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        log.debug("gc_frozen", objects=gc.get_freeze_count(), collected=collected, full=True,
                  took_ms=round(1000 * (time.perf_counter() - began)))


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


class Gateway:
    def __init__(self, mapping: Mapping, engine: Engine, *, clock: Callable[[], datetime] = utcnow,
                 stats: str | None = None, lease: LeaseOptions | None = None,
                 mapping_file: str | os.PathLike[str] | None = None,
                 reload_requests: asyncio.Event | None = None, gather_s: float = DEFAULT_GATHER_S) -> None:
        self.mapping = mapping
        # Where ``mapping`` was read from, read again whenever ``reload_requests`` is set (SIGHUP).
        self.mapping_file = mapping_file
        self._reload_requests = reload_requests
        self.engine = engine
        self.clock = clock
        # Without ``lease`` (tests, the demo's own ledger) nothing is fenced: one process only.
        self.keeper = None if lease is None else LeaseKeeper(
            engine, list(mapping.machines), lease, last_commit=lambda: self.writer.health.last_commit_at)
        self.writer = LedgerWriter(engine, fence=self.keeper.fence if self.keeper else None,
                                   on_fenced=self._lost_from_thread, gather_s=gather_s)
        if stats is not None:  # a JSON line per committed transaction, for benchmarks
            self.writer.after_commit.append(StatsFile(stats).committed)
        self.last_seen: dict[tuple[str, str], TagValue] = {}  # (machine, role) → latest value, owned or not
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper_died = False
        self.machines: dict[str, MachineRuntime] = {}
        self.orders = OrderDirectory()  # units are confirmed against open orders only
        self.collectors = Collectors()  # repetitive machines: the cost collectors they confirm on
        self.sources: list[Source] = []
        self._running: dict[str, tuple[Source, asyncio.Task]] = {}  # source name → source, its task
        self._generation: dict[str, int] = {}  # source name → the generation whose values are applied
        self._known_checked_at = 0.0
        self._started = asyncio.Event()
        self._closed = False  # sources stopped (or given up on): no batch is applied after this
        self._timer_turn = 0  # where the next tick's due-check starts (see _confirm_all)
        self.outputs = OutputsProcess(engine, mapping)  # started by run()

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
            self._confirm_all(Moment.SHUTDOWN)
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
        """The delivery workers of ``outputs:`` in the outbox relay process (gateway.outputs.relay),
        woken by every commit."""
        session = f"{leases.session_name(self.keeper.me.process)}:outputs" if self.keeper else None
        self.outputs = OutputsProcess(self.engine, self.mapping, owned=self._owned_machines,
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
        self.collectors.register(self.orders)
        for name, cfg in self.mapping.machines.items():
            rt = self.machines[name] = MachineRuntime.of(name, cfg)
            rt.resume(resumed)

    # -- ownership -------------------------------------------------------------------

    async def _taken(self, tokens: dict[str, int]) -> None:
        """Machines taken over: their state as the last owner committed it, then the latest values."""
        resumed = await asyncio.to_thread(resume_state, self.engine, list(tokens))
        for name, token in tokens.items():
            rt = self.machines.get(name)
            if rt is None:  # taken out of the mapping by a reload meanwhile; its lease is let go
                continue
            rt.resume(resumed)
            rt.token, rt.owned = token, True
            log.warning("machine_taken_over", machine=name, token=token, instance=self.keeper.me.instance)
            latest = [tv for (m, _), tv in self.last_seen.items() if m == name and rt.newer_than_committed(tv)]
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
            rt.forget()
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
        changes = ChangeSet()
        now = self.clock()
        for name in (*change.removed, *change.changed):
            rt = self.machines[name]
            if rt.owned:  # the old definition's units, confirmed as at shutdown
                rt.confirm_due(changes, self.orders, now, Moment.RELOAD)
        self._submit(changes)  # fenced by their tokens, before any of them changes
        for name in change.removed:
            del self.machines[name]
            for key in [k for k in self.last_seen if k[0] == name]:
                del self.last_seen[key]
        if self.keeper is not None:
            self.keeper.drop(list(change.removed))  # no longer renewed; released once committed
        for name in change.changed:
            self.machines[name] = self.machines[name].redefined(new.machines[name])
        for name in change.added:
            rt = self.machines[name] = MachineRuntime.of(name, new.machines[name])
            rt.resume(resumed)
            if self.keeper is not None:
                rt.token, rt.owned = tokens.get(name), name in tokens
        self.mapping = new

    async def _tick_forever(self, interval_s: float = TICK_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._refresh_known_orders()  # orders loaded or completed from the CLI meanwhile
            self._confirm_all(Moment.TICK)

    async def _refresh_known_orders(self) -> None:
        if time.monotonic() - self._known_checked_at < KNOWN_ORDERS_REFRESH_S:
            return
        self._known_checked_at = time.monotonic()
        try:
            orders = await asyncio.to_thread(order_directory, self.engine)
            self.collectors.register(orders)  # collectors in use that the writer has not created yet
            self.orders = orders
        except Exception as exc:  # noqa: BLE001 — a read; retried at the next tick
            log.warning("known_orders_refresh_failed", error=str(exc))

    # -- processing ------------------------------------------------------------------

    def on_batch(self, values: list[TagValue]) -> None:
        """Apply one batch of tag values from a source (in the order given)."""
        if self._closed:
            # A source that outlived the shutdown: its counts stay on the PLC counter, whose
            # committed position is older, so the next start counts them. Nothing is lost.
            return
        changes = ChangeSet()
        now = self.clock()
        first_states(self.machines, values)
        snapshots = state_snapshots(self.machines, values)
        machines, last_seen, orders, none = self.machines, self.last_seen, self.orders, frozenset()
        runs: list[MachineRuntime] = []  # machines counting a run of increases (gateway.machine): settled below
        try:
            for tv in values:
                rt = machines.get(tv.machine)
                if rt is None:
                    continue
                last_seen[(tv.machine, tv.role)] = tv
                if not rt.owned:
                    continue  # another instance counts it; these units are its to confirm
                if rt.repetitive:
                    self._roll_period(rt, changes, now)
                rt.on_value(tv, changes, orders, now,
                            snapshots.get((tv.machine, tv.source_time), none) if snapshots else none, runs)
        finally:
            # What was applied in memory must reach the ledger even if a later value raised.
            for rt in runs:
                rt.settle(changes, orders, now)
            self._submit(changes)

    def _submit(self, changes: ChangeSet) -> None:
        """Hand a change-set to the writer, fenced by the lease token of each machine it touches.

        The cost collectors its confirmations post to go with it: the writer creates a
        collector that is not in the ledger yet before it posts to it."""
        for c in changes.confirmations:
            if (key := self.collectors.key(c.order, self.orders)) is not None:
                changes.collectors[c.order] = key
        if changes and self.keeper is not None:
            changes.fences = {m: self.machines[m].token for m in changes.machines()}
            if self.keeper.whole:
                changes.fences[LEDGER] = self.keeper.tokens.get(LEDGER)
        self.writer.submit(changes)

    # -- confirming ------------------------------------------------------------------

    def _confirm_all(self, moment: Moment) -> None:
        """Confirm what the rules say is due (``TICK``, every tick) or everything (``SHUTDOWN``).

        By the rules, at most ``TIMER_CONFIRMATIONS_PER_TICK`` per tick, machines taken in
        turn: when thousands of timers expire together, their confirmations go to the
        ledger over a few ticks instead of one transaction that holds back every counter
        change queued behind it. Units wait as pending meanwhile (committed, not lost).
        """
        changes = ChangeSet()
        now = self.clock()
        machines = list(self.machines.values())
        start = self._timer_turn % len(machines) if machines else 0
        for i, rt in enumerate(machines[start:] + machines[:start]):
            if moment is Moment.TICK and len(changes.confirmations) >= TIMER_CONFIRMATIONS_PER_TICK:
                self._timer_turn = start + i  # the next tick starts with this machine
                break
            if rt.owned:
                if rt.repetitive:
                    self._roll_period(rt, changes, now)
                rt.confirm_due(changes, self.orders, now, moment)
        self._submit(changes)

    def _roll_period(self, rt: MachineRuntime, changes: ChangeSet, now: datetime) -> None:
        """A repetitive machine on the collector of ``now``'s period: on a new one (the period ended,
        or a first start), what the old one has pending is confirmed to it, as at an order change."""
        key = self.collectors.current(rt.config, self.orders, now)
        if key.number == rt.order:
            return
        log.info("collector_changed", machine=rt.name, collector=key.number, previous=rt.order or None,
                 product=key.product, version=key.version, line=key.line, period=key.period)
        rt.order = key.number
        rt.confirm_due(changes, self.orders, now, Moment.PERIOD_CHANGED)
        changes.machine_orders[rt.name] = key.number
        changes.collectors[key.number] = key  # created with this change-set if it is new

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
        self._confirm_all(Moment.TICK)

    def close_replay(self, timeout_s: float = 30.0) -> bool:
        """As at shutdown: confirm every pending unit of a known order, commit; True if committed."""
        self._closed = True
        self._confirm_all(Moment.SHUTDOWN)
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
