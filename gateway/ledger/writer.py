"""The one ledger writer: group-commits counter state, confirmations and their postings.

The service hands the writer change-sets (``gateway.ledger.changes.ChangeSet``: what
changed in memory: counter states, pending units, confirmations, anomalies). A single
thread drains everything queued, merges it into one change-set and writes it in ONE
transaction with the synchronous driver; the event loop never waits on a disk.

Why this is exactly-once: every transaction contains, for every machine it touches,
the counter position *and* everything counted up to that position (as confirmations
with their postings, as pending units, or as anomalies). After a crash the gateway
resumes from the last committed position; the PLC's cumulative counter covers the
rest. A confirmation already in the ledger (same deterministic id) is not posted again.

``after_commit`` hooks (``gateway.http.metrics``, the ``--stats`` lines of
``gateway.ledger.stats``, waking the outputs) are called in the writer thread after each
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
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, Engine, insert

from gateway.backoff import Backoff
from gateway.clock import utcnow
from gateway.ledger import schema
from gateway.ledger.changes import ChangeSet
from gateway.ledger.claims import transaction
from gateway.ledger.failures import cause, lost_to_transient, root_error, short_error
from gateway.ledger.masters import MasterCache
from gateway.ledger.posting import apply

log = structlog.get_logger("gateway.ledger")

# The most confirmations merged into one transaction. A backlog (the database was down, a burst)
# is written in transactions of about this size, not in one: the writer plans a transaction's
# postings between its statements, and a transaction of tens of thousands of confirmations kept
# a PostgreSQL session idle in its transaction past ``idle_in_transaction_session_timeout`` (the
# lease TTL ÷ 2), was cut off, retried with still more queued — and never committed. 1 000 is
# ~0.2–1 s of the writer's work and keeps the group commit's gain (the per-transaction cost is
# already small against it at 100).
MOST_CONFIRMATIONS_PER_TRANSACTION = 1000

# How long the writer gathers changes into one transaction, from the start of the last one
# (``LedgerWriter._gather``). 0: a transaction starts as soon as anything is queued, so a change is
# in the ledger within one transaction's time. ``gateway run --gather 0.2`` cost the writer about a
# quarter less CPU per change at 100 machines × 50 Hz (``bench/hotpath.py --gather``), and put the
# changes 0.1 s (p50) to 0.2 s (p99) later in the ledger (``bench/e2e.py --gather``, bench/RESULTS.md).
DEFAULT_GATHER_S = 0.0

# The writer keeps its connection between transactions at most this long without one (``_connection``).
KEEP_CONNECTION_IDLE_S = 10.0

# Which of the machines (machine → the lease token its changes were made under) this
# instance no longer owns, checked on the transaction's connection (``leases.fence``).
Fence = Callable[[Connection, dict[str, int]], set[str]]


@dataclass(frozen=True)
class Committed:
    """What one transaction committed, handed to the ``after_commit`` hooks.

    ``changes`` is the change-set as written (less what the fence dropped); ``posted`` is how
    many of its confirmations were new (a replay of one already in the ledger is not posted
    again); the times are ``time.time()`` at the transaction's start and after its commit.
    """

    changes: ChangeSet
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
                 fence: Fence | None = None,
                 on_fenced: Callable[[dict[str, int]], None] | None = None,
                 most_confirmations: int = MOST_CONFIRMATIONS_PER_TRANSACTION,
                 gather_s: float = DEFAULT_GATHER_S) -> None:
        self._engine = engine
        self._gather_s = gather_s  # see _gather
        self._began = 0.0  # time.monotonic() when the last transaction began
        self._most = most_confirmations
        self._fence = fence
        self._on_fenced = on_fenced
        self._queue: queue.SimpleQueue[ChangeSet | concurrent.futures.Future | None] = queue.SimpleQueue()
        self._masters = MasterCache()
        self._backoff = Backoff(retry_min_s, max(retry_min_s, retry_max_s))
        self._conn: Connection | None = None  # see _connection
        self._conn_used_at = 0.0
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

    def submit(self, changes: ChangeSet) -> None:
        if changes:
            self._queue.put(changes)

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
            self._drop_connection(broken=False)
        except BaseException as exc:  # ends the thread: say so loudly, the service watches ``alive``
            log.critical("ledger_writer_died", error=short_error(exc), exc_info=True,
                         hint="nothing more is written to the ledger; the gateway stops with a failure and "
                              "the next start recounts from the last committed position")
            raise

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            queued, waiters, stopping = self._drain(block=True)
            if self._gather_s and not (waiters or stopping):
                more, waiters, stopping = self._gather()
                queued += more
            self._began = time.monotonic()
            while queued:
                try:
                    self._write(queued)  # removes from ``queued`` what is done
                except Exception as exc:  # noqa: BLE001 — retried with backoff; nothing is dropped
                    self._failed(exc, queued)
                    more, more_waiters, stop_now = self._drain(block=False)
                    queued += more
                    waiters += more_waiters
                    stopping = stopping or stop_now
            for w in waiters:
                w.set_result(None)
        self._drained = True

    def _gather(self) -> tuple[list[ChangeSet], list[concurrent.futures.Future], bool]:
        """Wait until ``gather_s`` after the last transaction began, then take what came meanwhile.

        Counter changes arrive in small batches (a source's publish response, a poll); each
        transaction writes a counter-state, a pending and a units-counted row for every machine
        in it and pays a BEGIN, the fence and a COMMIT, whatever its size. Gathering what comes
        over ``gather_s`` into one transaction writes those once for all of it. A writer that is
        behind (its last transaction took longer) does not wait; a barrier or a stop ends the wait.
        """
        queued: list[ChangeSet] = []
        waiters: list[concurrent.futures.Future] = []
        stopping = False
        while not (waiters or stopping):
            wait = self._began + self._gather_s - time.monotonic()
            if wait <= 0:
                break
            more, waiters, stopping = self._drain(block=True, timeout=wait)
            queued += more
        return queued, waiters, stopping

    def _drain(self, *, block: bool, timeout: float | None = None
               ) -> tuple[list[ChangeSet], list[concurrent.futures.Future], bool]:
        queued: list[ChangeSet] = []
        waiters: list[concurrent.futures.Future] = []
        stopping = False
        try:
            item = self._queue.get(timeout=timeout) if block else self._queue.get_nowait()
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, concurrent.futures.Future):
                    waiters.append(item)
                else:
                    queued.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return queued, waiters, stopping

    def _write(self, queued: list[ChangeSet]) -> None:
        """Commit the longest mergeable prefix of ``queued`` and remove it from the list.

        If the database refuses it for its content, the change-sets are tried one by one, and
        a refused one machine by machine (``_narrow``). A transient failure raises; what is
        still in ``queued`` then is exactly what is left to write.
        """
        batch, used = _merged(queued, self._most)
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
                self._narrow(queued)
                del queued[0]
            return
        del queued[:used]

    def _narrow(self, queued: list[ChangeSet]) -> None:
        """Write ``queued[0]`` alone, else machine by machine; set aside what cannot be stored."""
        try:
            self._commit(queued[0])
            return
        except Exception as exc:
            if lost_to_transient(exc):
                raise
        for machine in sorted(queued[0].machines() - set(self._held)):
            rest = queued[0].machines() - {machine}
            part = queued[0].without(rest)
            try:
                self._commit(part)
            except Exception as exc:
                if lost_to_transient(exc):
                    raise
                self._set_aside(part, machine, exc)
            queued[0] = queued[0].without({machine})  # done: a retry must not write it twice

    def _set_aside(self, part: ChangeSet, machine: str, exc: Exception) -> None:
        """Hold ``machine`` (nothing more of it is written) and keep its refused change as a dead letter."""
        content = part.describe()
        self._held[machine] = short_error(exc)
        self.health.held_machines = sorted(self._held)
        log.error("ledger_machine_held", machine=machine, error=short_error(exc), content=content,
                  hint="this change cannot be stored; it is kept in dead_letters and the machine's stored counter "
                       "position is held (nothing more of it is written). Fix the cause and restart the gateway: "
                       "the units from that position on are counted again from the PLC counter")
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(schema.dead_letters), [{"created_at": utcnow(), "error": short_error(exc),
                                                       "content": content}])
        except Exception as failed:
            log.error("dead_letter_not_written", machine=machine, error=short_error(failed),
                      hint="the refused change is only in this log; the machine stays held all the same")
            if lost_to_transient(failed):
                raise
            return
        self.health.dead_letters += 1

    def _failed(self, exc: Exception, queued: list[ChangeSet]) -> None:
        h = self.health
        h.retries += 1
        h.failing_since = h.failing_since or utcnow()
        h.last_error = root_error(exc)
        h.queued_confirmations = sum(len(c.confirmations) for c in queued)
        delay = self._backoff.next()
        transient = lost_to_transient(exc)
        log.error(
            "ledger_commit_failed",
            error=h.last_error,
            transient=transient,
            retry_in_s=round(delay, 2),
            failing_for_s=round((utcnow() - h.failing_since).total_seconds(), 1),
            queued_confirmations=h.queued_confirmations,
            exc_info=not transient,  # an error of the writer itself: its traceback helps
            hint=commit_hint(exc, transient),
        )
        time.sleep(delay)

    def _commit(self, batch: ChangeSet) -> None:
        began = time.time() if self.after_commit else 0.0
        if self._held and not batch.machines().isdisjoint(self._held):
            batch = batch.without(set(self._held))
        # The lines claiming its postings are written when this block ends: after COMMIT returned.
        try:
            with transaction(self._connection()) as (conn, _):
                batch, fences, lost = self._fenced(conn, batch)
                posted = apply(conn, batch, self._masters)
        except BaseException:
            self._drop_connection()  # it may be broken: the next attempt takes a fresh one
            raise
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
        if self.after_commit:
            self._committed(Committed(batch, posted, began, time.time()))

    def _fenced(self, conn: Connection, batch: ChangeSet) -> tuple[ChangeSet, dict[str, int], set[str]]:
        """``batch`` less the machines this instance no longer owns; its fences; those machines.

        First in the transaction: the lease rows stay locked until it commits, so no other
        instance takes these machines over between this check and the commit."""
        if self._fence is None:
            return batch, {}, set()
        fences = batch.fences
        if not fences:
            return batch, fences, set()
        lost = self._fence(conn, fences)
        return (batch.without(lost) if lost else batch), fences, lost

    def _connection(self) -> Connection:
        """The writer's own connection, kept from one transaction to the next: taking one from the
        pool and giving it back (a rollback on return) for every transaction was a tenth of the
        writer's CPU (``bench/hotpath.py``). Dropped after a failed transaction; given back after
        a quiet spell, so that the next one comes from the pool checked (``pool_pre_ping``) instead
        of failing once on a session the server ended meanwhile (``idle_session_timeout``, a restart)."""
        now = time.monotonic()
        if self._conn is not None and now - self._conn_used_at > KEEP_CONNECTION_IDLE_S:
            self._drop_connection(broken=False)
        if self._conn is None:
            self._conn = self._engine.connect()
        self._conn_used_at = now
        return self._conn

    def _drop_connection(self, *, broken: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if broken:
                    conn.invalidate()  # a connection that failed is not given back to the pool
                conn.close()
            except Exception as exc:  # noqa: BLE001 — it is being thrown away
                log.debug("ledger_connection_close_failed", error=short_error(exc))

    def _committed(self, done: Committed) -> None:
        """Tell the hooks; the transaction is committed, so nothing they do may fail it (a retry would
        write it again)."""
        for hook in self.after_commit:
            try:
                hook(done)
            except Exception as exc:  # noqa: BLE001 — a hook's failure is its own, never the ledger's
                log.warning("after_commit_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)),
                            error=short_error(exc))


def commit_hint(exc: BaseException, transient: bool) -> str:
    """What a failed commit's log line tells a person: the real cause if it is known, and what happens now."""
    found = cause(exc)
    if found is not None:
        return f"{found.hint}; counting continues in memory and the writer retries" if transient else (
            f"{found.hint}; the writer retries, nothing queued is dropped")
    if transient:
        return "counting continues in memory; the database is unreachable or busy, the writer retries"
    return "an unexpected error in the ledger writer; it retries, nothing queued is dropped"


def _merged(queued: list[ChangeSet], most: int = MOST_CONFIRMATIONS_PER_TRANSACTION) -> tuple[ChangeSet, int]:
    """The longest prefix of ``queued`` that goes in one transaction, merged; and its length. It holds
    at most ``most`` confirmations, unless its first change-set alone has more (a change-set is never
    split: it is one moment of the counters)."""
    if len(queued) == 1:
        return queued[0], 1
    merged, confirmations = ChangeSet(), 0
    for used, c in enumerate(queued):
        confirmations += len(c.confirmations)
        if used and (confirmations > most or not merged.can_merge(c)):
            return merged, used
        merged.merge(c)
    return merged, len(queued)
