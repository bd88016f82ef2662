"""The one ledger writer: group-commits counter state, confirmations and their postings.

The service hands the writer ``Commit`` objects (what changed in memory: counter
states, pending units, confirmations, anomalies). A single thread drains everything
queued, merges it into one ``Commit`` and writes it in ONE transaction with the
synchronous driver; the event loop never waits on a disk.

Why this is exactly-once: every transaction contains, for every machine it touches,
the counter position *and* everything counted up to that position (as confirmations
with their postings, as pending units, or as anomalies). After a crash the gateway
resumes from the last committed position; the PLC's cumulative counter covers the
rest. A confirmation already in the ledger (same deterministic id) is not posted again.

With ``stats`` (``gateway run --stats FILE``) the writer appends one JSON line per
committed transaction — when it began and committed, how many counter changes it covered,
the oldest and newest PLC source time among them and each one's age at commit,
confirmations and counter states written — so a benchmark can measure commit rates and
latency from outside the process. Without it a ``Commit`` only counts its changes and keeps
their oldest and newest source time; nothing is written.

``after_commit`` hooks (metrics, benchmarks) are called in the writer thread after each
transaction has committed, with what it committed (``Committed``). A hook must be quick and
must not touch the ledger; whatever it raises is logged and never affects the writing.

If the database is unreachable or locked, the writer keeps what is queued, retries with
backoff and reports it in ``health``. An unexpected error in the writer itself is retried
the same way and logged; the thread does not end while the gateway runs, and should it
end anyway the service notices (``alive``) and stops the gateway with a failure.
``stop()`` says True only if everything queued was written.

If the database refuses a change for what it contains, it is narrowed down: the queued
changes are committed one by one, and a refused one machine by machine. A confirmation
whose *postings* fail never gets here: ``posting.apply`` keeps it with its units and queues
it for ``gateway errors reprocess``. What cannot be stored at all is set aside in
``dead_letters`` with the error, and that machine is **held**: nothing more of it (counter
position, pending units, confirmations, units counted) is written by this process, so its
stored position stays where the ledger is complete and the next start recounts those
units from the PLC counter. The other machines go on. Nothing is dropped.

What one transaction writes is ``gateway.ledger.posting.apply``; this module is the
thread, its queue, its retries and its health. The lines that claim a posting
(``confirmation_posted`` …) are written here, after COMMIT returned, once per posting and
with the commit time; a transaction that fails logs them as ``…_attempted`` with its error
(``gateway.ledger.claims``), so a retried transaction never claims a posting twice.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import Connection, Engine, insert

from gateway.backoff import Backoff
from gateway.domain.confirming import Pending, format_positions
from gateway.domain.records import Anomaly, Confirmation, CounterState
from gateway.ledger import schema as t
from gateway.ledger.claims import transaction
from gateway.ledger.failures import cause, lost_to_transient, root_error, short_error
from gateway.ledger.masters import MasterCache
from gateway.ledger.outbox import Mark
from gateway.ledger.posting import apply

log = structlog.get_logger("gateway.ledger")

PendingKey = tuple[str, str, str]
# Which of the machines (machine → the lease token its changes were made under) this
# instance no longer owns, checked on the transaction's connection (``leases.fence``).
Fence = Callable[[Connection, dict[str, int]], set[str]]


@dataclass
class Commit:
    """Changes to make durable together. ``pendings[key] = None`` clears that pending."""

    counter_states: dict[tuple[str, str], CounterState] = field(default_factory=dict)
    pendings: dict[PendingKey, Pending | None] = field(default_factory=dict)
    machine_orders: dict[str, str] = field(default_factory=dict)
    # machine → (counters pending a job reset, those of them whose job change was unseen):
    # written with the order change and with each counter's first value after it, so a
    # restart in between still takes that value for the new job's (``machine_states``).
    job_resets: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    confirmations: list[Confirmation] = field(default_factory=list)
    anomalies: list[tuple[Anomaly, Decimal]] = field(default_factory=list)  # with units held
    # Every unit the machine's counters ever showed (increments and held jumps), up to and
    # including these changes: written as the machine's ``counted_units`` in the same
    # transaction as its counter state (an absolute figure, so a retried transaction writes it
    # again unchanged); ``gateway report`` checks confirmed + pending + held against it.
    counted: dict[str, Decimal] = field(default_factory=dict)
    # The lease token of each machine these changes were made under (``gateway.ledger.leases``):
    # the transaction writes a machine's changes only while its lease still carries that token.
    # A machine not named here is not fenced (tests and tools that post without leases).
    fences: dict[str, int] = field(default_factory=dict)
    # For --stats only: counter changes covered, and their oldest/newest PLC source time
    # (a merged commit keeps one state per counter, so the older times are kept here).
    readings: int = 0
    oldest_source: datetime | None = None
    newest_source: datetime | None = None
    source_times: list[datetime] | None = None  # every change's source time; only with --stats
    # The delivery workers' outbox marks (``gateway.ledger.outbox.mark_on``): their last round's
    # outcomes and the rows they are about to send. Written by this one writer, so no second
    # connection competes for SQLite's write lock; a worker submits them as a Commit of their own.
    outbox_marks: list[Mark] = field(default_factory=list)
    outbox_in_flight: list[int] = field(default_factory=list)

    def can_merge(self, later: Commit) -> bool:
        """False when a machine's changes were made under two leases (lost and taken again)."""
        return all(self.fences.get(m, tok) == tok for m, tok in later.fences.items())

    def machines(self) -> set[str]:
        return ({m for m, _ in self.counter_states} | {k[0] for k in self.pendings} | set(self.machine_orders)
                | set(self.job_resets) | {c.machine for c in self.confirmations} | {a.machine for a, _ in self.anomalies}
                | set(self.counted))

    def without(self, machines: set[str]) -> Commit:
        """The same changes less those of ``machines`` (whose lease was lost: none of it may be written)."""
        return Commit(
            counter_states={k: v for k, v in self.counter_states.items() if k[0] not in machines},
            pendings={k: v for k, v in self.pendings.items() if k[0] not in machines},
            machine_orders={k: v for k, v in self.machine_orders.items() if k not in machines},
            job_resets={k: v for k, v in self.job_resets.items() if k not in machines},
            confirmations=[c for c in self.confirmations if c.machine not in machines],
            anomalies=[(a, u) for a, u in self.anomalies if a.machine not in machines],
            counted={k: v for k, v in self.counted.items() if k not in machines},
            fences={k: v for k, v in self.fences.items() if k not in machines},
            readings=self.readings, oldest_source=self.oldest_source, newest_source=self.newest_source,
            source_times=self.source_times, outbox_marks=self.outbox_marks, outbox_in_flight=self.outbox_in_flight,
        )

    def merge(self, later: Commit) -> None:
        self.readings += later.readings
        if later.source_times:
            if self.source_times is None:
                self.source_times = []
            self.source_times.extend(later.source_times)
        if later.oldest_source is not None and (self.oldest_source is None or later.oldest_source < self.oldest_source):
            self.oldest_source = later.oldest_source
        if later.newest_source is not None and (self.newest_source is None or later.newest_source > self.newest_source):
            self.newest_source = later.newest_source
        self.counter_states.update(later.counter_states)
        self.pendings.update(later.pendings)
        self.machine_orders.update(later.machine_orders)
        self.job_resets.update(later.job_resets)
        self.confirmations.extend(later.confirmations)
        self.anomalies.extend(later.anomalies)
        self.counted.update(later.counted)
        self.fences.update(later.fences)
        self.outbox_marks.extend(later.outbox_marks)
        self.outbox_in_flight.extend(later.outbox_in_flight)

    def __bool__(self) -> bool:
        return bool(self.counter_states or self.pendings or self.machine_orders or self.confirmations or self.anomalies
                    or self.counted or self.job_resets or self.outbox_marks or self.outbox_in_flight)


@dataclass(frozen=True)
class Committed:
    """What one transaction committed, handed to the ``after_commit`` hooks.

    ``batch`` is the change-set as written (less what the fence dropped); ``posted`` is how
    many of its confirmations were new (a replay of one already in the ledger is not posted
    again); the times are ``time.time()`` at the transaction's start and after its commit.
    """

    batch: Commit
    posted: int
    began_at: float
    committed_at: float


@dataclass
class WriterHealth:
    transactions: int = 0
    confirmations: int = 0
    replays_skipped: int = 0
    dead_letters: int = 0
    failing_since: datetime | None = None
    last_error: str | None = None
    last_commit_at: float | None = None  # time.monotonic() of the last commit
    retries: int = 0
    queued_confirmations: int = 0  # waiting for the database while it fails
    held_machines: list[str] = field(default_factory=list)  # positions held after a change could not be stored


class LedgerWriter:
    """Single writer thread; ``submit`` never blocks the caller."""

    def __init__(self, engine: Engine, *, retry_min_s: float = 0.2, retry_max_s: float = 15.0,
                 stats: str | None = None, fence: Fence | None = None,
                 on_fenced: Callable[[dict[str, int]], None] | None = None) -> None:
        self._engine = engine
        self._fence = fence
        self._on_fenced = on_fenced
        # Line-buffered: a benchmark reads it while the gateway runs, and after a kill.
        self._stats = open(stats, "a", buffering=1, encoding="utf-8") if stats else None  # noqa: SIM115
        self._recorded: list[dict] = []  # stats lines of committed transactions, written after the retried unit
        self._queue: queue.SimpleQueue[Commit | concurrent.futures.Future | None] = queue.SimpleQueue()
        self._masters = MasterCache()
        self._backoff = Backoff(retry_min_s, max(retry_min_s, retry_max_s))
        self._held: dict[str, str] = {}  # machine → the error that holds its stored position
        self._drained = False  # set when the thread ends with everything queued written
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self.health = WriterHealth()
        # Called in this thread after every commit (see the module docstring); add before start().
        self.after_commit: list[Callable[[Committed], None]] = []

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the thread has ended (after ``stop``, or because it died)."""
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        """Change-sets (and barriers) waiting for the writer: approximate, for health and metrics."""
        return self._queue.qsize()

    @property
    def recording(self) -> bool:
        """True with ``stats``: the service then lists every change's source time in its commits."""
        return self._stats is not None

    def submit(self, commit: Commit) -> None:
        if commit:
            self._queue.put(commit)

    def barrier(self) -> concurrent.futures.Future:
        """A future that completes once everything submitted before it is committed."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(fut)
        return fut

    def stop(self, timeout: float | None = None) -> bool:
        """Commit what is queued, then stop. True only if all of it was written (or set aside
        in ``dead_letters``) and the thread ended; False if it did not finish in time or died."""
        self._queue.put(None)
        self._thread.join(timeout)
        return self._drained and not self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # ends the thread: say so loudly, the service watches ``alive``
            log.critical("ledger_writer_died", error=short_error(exc), exc_info=True,
                         hint="nothing more is written to the ledger; the gateway stops with a failure and "
                              "the next start recounts from the last committed position")
            raise

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            commits, waiters, stopping = self._drain(block=True)
            while commits:
                try:
                    self._write(commits)  # removes from ``commits`` what is done
                except Exception as exc:  # noqa: BLE001 — retried with backoff; nothing is dropped
                    self._failed(exc, commits)
                    more, more_waiters, stop_now = self._drain(block=False)
                    commits += more
                    waiters += more_waiters
                    stopping = stopping or stop_now
                finally:
                    self._write_stats()
            for w in waiters:
                w.set_result(None)
        self._drained = True

    def _drain(self, *, block: bool) -> tuple[list[Commit], list[concurrent.futures.Future], bool]:
        commits: list[Commit] = []
        waiters: list[concurrent.futures.Future] = []
        stopping = False
        try:
            item = self._queue.get() if block else self._queue.get_nowait()
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, concurrent.futures.Future):
                    waiters.append(item)
                else:
                    commits.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return commits, waiters, stopping

    def _write(self, commits: list[Commit]) -> None:
        """Commit the longest mergeable prefix of ``commits`` and remove it from the list.

        If the database refuses it for its content, the commits are tried one by one, and
        a refused one machine by machine (``_narrow``). A transient failure raises; what is
        still in ``commits`` then is exactly what is left to write.
        """
        batch, used = _merged(commits)
        try:
            self._commit(batch)
        except Exception as exc:
            if lost_to_transient(exc):
                raise
            found = cause(exc)
            log.error("ledger_commit_refused", error=short_error(exc), commits=used,
                      cause=found.name if found else None,
                      hint=(f"{found.hint}; " if found else "") + "committing one by one to find the refused change")
            for _ in range(used):
                self._narrow(commits)
                del commits[0]
            return
        del commits[:used]

    def _narrow(self, commits: list[Commit]) -> None:
        """Write ``commits[0]`` alone, else machine by machine; set aside what cannot be stored."""
        try:
            self._commit(commits[0])
            return
        except Exception as exc:
            if lost_to_transient(exc):
                raise
        for machine in sorted(commits[0].machines() - set(self._held)):
            rest = commits[0].machines() - {machine}
            part = commits[0].without(rest)
            try:
                self._commit(part)
            except Exception as exc:
                if lost_to_transient(exc):
                    raise
                self._set_aside(part, machine, exc)
            commits[0] = commits[0].without({machine})  # done: a retry must not write it twice

    def _set_aside(self, part: Commit, machine: str, exc: Exception) -> None:
        """Hold ``machine`` (nothing more of it is written) and keep its refused change as a dead letter."""
        content = describe(part)
        self._held[machine] = short_error(exc)
        self.health.held_machines = sorted(self._held)
        log.error("ledger_machine_held", machine=machine, error=short_error(exc), content=content,
                  hint="this change cannot be stored; it is kept in dead_letters and the machine's stored counter "
                       "position is held (nothing more of it is written). Fix the cause and restart the gateway: "
                       "the units from that position on are counted again from the PLC counter")
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(t.dead_letters), [{"created_at": t.utcnow(), "error": short_error(exc),
                                                       "content": content}])
        except Exception as failed:
            log.error("dead_letter_not_written", machine=machine, error=short_error(failed),
                      hint="the refused change is only in this log; the machine stays held all the same")
            if lost_to_transient(failed):
                raise
            return
        self.health.dead_letters += 1

    def _failed(self, exc: Exception, commits: list[Commit]) -> None:
        h = self.health
        h.retries += 1
        h.failing_since = h.failing_since or t.utcnow()
        h.last_error = root_error(exc)
        h.queued_confirmations = sum(len(c.confirmations) for c in commits)
        delay = self._backoff.next()
        transient = lost_to_transient(exc)
        log.error(
            "ledger_commit_failed",
            error=h.last_error,
            transient=transient,
            retry_in_s=round(delay, 2),
            failing_for_s=round((t.utcnow() - h.failing_since).total_seconds(), 1),
            queued_confirmations=h.queued_confirmations,
            exc_info=not transient,  # an error of the writer itself: its traceback helps
            hint=commit_hint(exc, transient),
        )
        time.sleep(delay)

    def _commit(self, batch: Commit) -> None:
        began = time.time() if self._stats is not None or self.after_commit else 0.0
        if self._held and not batch.machines().isdisjoint(self._held):
            batch = batch.without(set(self._held))
        lost: set[str] = set()
        # The lines claiming its postings are written when this block ends: after COMMIT returned.
        with transaction(self._engine) as (conn, _):
            if self._fence is not None and batch.fences:
                # First in the transaction: the lease rows stay locked until it commits, so no
                # other instance takes these machines over between this check and the commit.
                fences = batch.fences
                lost = self._fence(conn, fences)
                if lost:
                    batch = batch.without(lost)
            posted = apply(conn, batch, self._masters)
        if lost:
            log.error("ledger_changes_fenced_off", machines=sorted(lost),
                      hint="this instance lost the machines' leases; their changes were not written and the "
                           "new owner counts those units from the last committed position")
            if self._on_fenced is not None:
                self._on_fenced({m: fences[m] for m in lost})
        h = self.health
        if h.failing_since is not None:
            log.info("ledger_recovered", after_retries=h.retries)
        h.transactions += 1
        h.last_commit_at = time.monotonic()
        h.confirmations += posted
        h.replays_skipped += len(batch.confirmations) - posted
        h.failing_since, h.retries, h.queued_confirmations = None, 0, 0
        self._backoff.reset()
        if self._stats is not None:
            done = time.time()
            self._recorded.append({
                "ages_ms": sorted(round(1000 * (done - st.timestamp())) for st in batch.source_times or ()),
                "began_at": began, "committed_at": done, "readings": batch.readings,
                "oldest_source": batch.oldest_source.timestamp() if batch.oldest_source else None,
                "newest_source": batch.newest_source.timestamp() if batch.newest_source else None,
                "confirmations": posted, "counter_states": len(batch.counter_states),
            })
        if self.after_commit:
            self._committed(Committed(batch, posted, began, time.time()))

    def _committed(self, done: Committed) -> None:
        """Tell the hooks; the transaction is committed, so nothing they do may fail it (a retry would
        write it again)."""
        for hook in self.after_commit:
            try:
                hook(done)
            except Exception as exc:  # noqa: BLE001 — a hook's failure is its own, never the ledger's
                log.warning("after_commit_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)),
                            error=short_error(exc))

    def _write_stats(self) -> None:
        """Append the committed transactions' stats lines; a failure here never touches the ledger."""
        if not self._recorded:
            return
        lines, self._recorded = self._recorded, []
        try:
            self._stats.write("".join(json.dumps(r) + "\n" for r in lines))
        except (OSError, ValueError) as exc:
            log.warning("stats_not_written", error=short_error(exc), lines=len(lines))


def commit_hint(exc: BaseException, transient: bool) -> str:
    """What a failed commit's log line tells a person: the real cause if it is known, and what happens now."""
    found = cause(exc)
    if found is not None:
        return f"{found.hint}; counting continues in memory and the writer retries" if transient else (
            f"{found.hint}; the writer retries, nothing queued is dropped")
    if transient:
        return "counting continues in memory; the database is unreachable or busy, the writer retries"
    return "an unexpected error in the ledger writer; it retries, nothing queued is dropped"


def _merged(commits: list[Commit]) -> tuple[Commit, int]:
    """The longest prefix of ``commits`` that goes in one transaction, merged; and its length."""
    if len(commits) == 1:
        return commits[0], 1
    merged = Commit()
    for used, c in enumerate(commits):
        if not merged.can_merge(c):
            return merged, used
        merged.merge(c)
    return merged, len(commits)


def describe(commit: Commit) -> str:
    """A readable, complete account of a commit, for the dead-letter table and the log."""
    parts = [f"confirmation {c.id} machine={c.machine} order={c.order} op={c.operation} yield={c.yield_qty} "
             f"scrap={c.scrap_qty} {c.uom} range={format_positions(c.start)}..{format_positions(c.end)}"
             for c in commit.confirmations]
    parts += [f"counter {m}/{k} at {s.position}" for (m, k), s in commit.counter_states.items()]
    parts += [f"pending {key} = {p.units if p else 'cleared'}" for key, p in commit.pendings.items()]
    parts += [f"machine {m} order={o!r}" for m, o in commit.machine_orders.items()]
    parts += [f"anomaly {a.machine}/{a.counter} {a.kind.value}: {a.detail}" for a, _ in commit.anomalies]
    parts += [f"units counted on {m}: {units}" for m, units in commit.counted.items()]
    if commit.outbox_marks or commit.outbox_in_flight:
        parts.append(f"outbox: {len(commit.outbox_marks)} outcomes, {len(commit.outbox_in_flight)} in flight")
    return "\n".join(parts)
