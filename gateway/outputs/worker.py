"""Delivery workers: asyncio tasks on the gateway's loop that move outbox rows to their targets.

One worker per configured output. A round reads the target's oldest undelivered rows (in a
worker thread, on a pooled connection of its own, as a read that never takes the write lock:
the ledger writer and the counting never wait for it), groups them by production order and
delivers each order's rows in outbox order — so a target sees an order's documents in the
order they were posted. Orders go in parallel (``concurrency``).

Batches: a target that takes many deliveries at once (``BatchTarget``: a webhook with
``batch``, MQTT) gets the round's rows in exchanges of up to ``batch_size``, an order's rows
always in one exchange and in posting order; the target answers per delivery, and a delivery
that fails holds its order's later ones back (``held``: nothing happened to them). A target of
one delivery per call (the ERPs) gets each order's rows one after the other, stopping at the
first that is not delivered.

One write per round: the outcomes of the previous round (delivered, failed, parked; kept in
memory meanwhile and laid over what the round reads; those delivered are not read again) and
the in-flight marks of this round's rows (``unknown`` before the first call) are written
together in a short transaction of the worker's own (``outbox.mark``), and the round sends
nothing before it is committed; none is held across a network call. In ``gateway run`` the
workers run in the outbox relay's process (``gateway.outputs.relay``), so these transactions
cost the gateway's ledger writer no CPU. A stop writes the last outcomes; a gateway killed
mid-round leaves what was in flight (and the outcomes not yet written) unknown, so the next
start asks the target before sending it again (the target's dedupe by key covers what it
cannot tell).

At-least-once with the key: a row is marked delivered only after the target said so. An
UNKNOWN outcome (sent, no answer) is never sent again blindly: the next attempt first asks
``target.find``; True marks it delivered, False sends it (under the same key, which the
receiver dedupes), None waits and asks again.

Retries back off per row with jitter (``Backoff.delay`` of its attempts); after
``max_attempts`` the row is parked with the target's last message, and so is a business
refusal at once. A parked row holds the later rows of its order back until a person retries
or skips it (``gateway outbox``). When a round delivered nothing and failed, the whole
worker also backs off, so a target that is down costs one attempt per order per pause.

Ownership: with leases, an instance delivers only the rows of the machines it owns (and
those of no machine); ``owned()`` says which. Must never: write a posting, hold a database
connection or transaction across a network call, or let a target's exception end the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
import structlog
from sqlalchemy import Engine

from gateway.backoff import Backoff
from gateway.clock import utcnow
from gateway.ledger import outbox
from gateway.ledger.outbox import Mark, Row
from gateway.mapping.model import Mapping, Output
from gateway.outputs.base import Delivery, Outcome, Target, Verdict, batches, looks_up, target_message
from gateway.outputs import registry

log = structlog.get_logger("gateway.outputs")


STOP_GRACE_S = 5.0  # a stopping worker's round in progress may finish within this


@dataclass
class WorkerOptions:
    poll_s: float = 0.25  # an idle worker looks for new rows this often (or at once when woken)
    batch: int = 5000  # rows delivered per round at most (a round waits for one commit of the ledger writer)
    concurrency: int = 8  # orders (one-delivery targets), exchanges (batch targets), lookups in parallel
    call_timeout_s: float = 60.0  # a target call that takes longer is cut off (as unknown)


class DeliveryWorker:
    def __init__(self, engine: Engine, target: Target, out: Output, *,
                 owned: Callable[[], set[str] | None] = lambda: None, options: WorkerOptions | None = None) -> None:
        self.engine = engine
        self.target = target
        self.batch_size = batches(target)
        self.marks_in_flight = looks_up(target)
        self.max_attempts = out.max_attempts
        self.backoff = Backoff(out.retry_min_s, max(out.retry_min_s, out.retry_max_s))
        self.pause = Backoff(min(0.5, out.retry_min_s), max(out.retry_min_s, out.retry_max_s))
        self.owned = owned
        self.options = options or WorkerOptions()
        self._wake = asyncio.Event()
        self._stopping = False  # set by ``finish``: no new round starts, the current one ends as it would
        self._outcomes: list[Mark] = []  # the last round's, written with the next round's in-flight marks
        self.delivered = 0  # since start, for tests and benchmarks

    def wake(self) -> None:
        self._wake.set()

    def finish(self) -> None:
        """Stop after the round in progress (its outcomes are then written): what a round has sent is
        marked, so a target that cannot be asked (MQTT) does not get it again at the next start."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    attempted, failed, delivered = await self.round()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 — the database is down, …: the rows wait, nothing is lost
                    log.warning("outbox_round_failed", output=self.target.name, error=target_message(repr(exc), 300))
                    attempted, failed, delivered = 0, 1, 0
                if delivered:
                    self.pause.reset()
                if failed and not delivered:
                    await self._sleep(self.pause.next())
                elif not attempted:
                    await self._sleep(self.options.poll_s)
        finally:
            await self.write_outcomes()

    async def _write_marks(self, marks: list[Mark], in_flight: list[int]) -> None:
        """Commit ``marks`` and the ``in_flight`` marks in a short transaction (in a thread: the loop
        goes on delivering the other outputs meanwhile)."""
        if marks or in_flight:
            await asyncio.to_thread(outbox.mark, self.engine, marks, in_flight=in_flight)

    async def write_outcomes(self) -> None:
        """Write what the last round found out (a stop; the next round would have written it)."""
        outcomes, self._outcomes = self._outcomes, []
        if outcomes:
            try:
                await self._write_marks(outcomes, [])
            except Exception as exc:  # noqa: BLE001 — those rows stay unknown: the next start asks the target
                log.warning("outbox_outcomes_not_written", output=self.target.name, rows=len(outcomes),
                            error=target_message(repr(exc), 300))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def round(self) -> tuple[int, int, int]:
        """One pass over the undelivered rows: (attempted, failed, delivered)."""
        known = {m.id: m for m in self._outcomes}
        delivered = [m.id for m in self._outcomes if m.status == "delivered"]  # not read again
        rows = await asyncio.to_thread(outbox.undelivered, self.engine, self.target.name,
                                       self.options.batch + len(known) - len(delivered), machines=self.owned(),
                                       delivered=delivered)
        chains = limited(due_chains(overlaid(rows, known), utcnow()), self.options.batch)
        due = [row for chain in chains for row in chain]
        # One write: the last round's outcomes, and this round's rows in flight — a kill before the
        # next round's write leaves these to be asked about first (not for a target that cannot be
        # asked: it gets them again either way).
        in_flight = [r.id for r in due if r.status == "pending"] if self.marks_in_flight else []
        await self._write_marks(list(known.values()), in_flight)
        self._outcomes = []
        if not chains:
            return 0, 0, 0
        marks: list[Mark] = []  # filled as outcomes come
        try:
            if self.batch_size > 1:
                await self._in_batches(chains, marks)
            else:
                await self._one_by_one(chains, marks)
        except asyncio.CancelledError:
            # The outcomes that came are facts (written as the worker ends); the rows not answered keep
            # their state in the ledger (in flight: asked about at the next start).
            self._outcomes = list(marks)
            raise
        reached = {m.id for m in marks}  # the rest (held back, not reached) keep their state
        self._outcomes = marks + [_as_it_was(r) for r in due if r.id not in reached]
        delivered = sum(m.status == "delivered" for m in marks)
        self.delivered += delivered
        return len(marks), len(marks) - delivered, delivered

    async def _one_by_one(self, chains: list[list[Row]], marks: list[Mark]) -> None:
        gate = asyncio.Semaphore(self.options.concurrency)

        async def walk(chain: list[Row]) -> None:
            async with gate:
                for row in chain:
                    m = await self.attempt(row)
                    marks.append(m)
                    if m.status != "delivered":
                        return  # the order's later rows wait for this one

        await asyncio.gather(*(walk(c) for c in chains))

    async def _in_batches(self, chains: list[list[Row]], marks: list[Mark]) -> None:
        """Unknown rows looked up first (in parallel), then each order's rows to send in one exchange."""
        gate = asyncio.Semaphore(self.options.concurrency)
        found: dict[int, object] = {}

        async def ask(row: Row) -> None:
            async with gate:
                found[row.id] = await self._call(self.target.find(delivery(row)), "find")

        await asyncio.gather(*(ask(r) for c in chains for r in c if r.status == "unknown"))
        sending: list[list[Row]] = []
        for chain in chains:
            send: list[Row] = []
            for row in chain:
                if row.status == "unknown":
                    answer = found[row.id]
                    if answer is True:
                        log.info("outbox_found_on_target", output=self.target.name, key=row.key,
                                 attempts=row.attempts + 1)
                        marks.append(Mark(row.id, "delivered", row.attempts + 1, utcnow()))
                        continue
                    if not isinstance(answer, bool):  # cannot tell: ask again later, never resend blindly
                        reason = answer.reason if isinstance(answer, Outcome) else "the target cannot tell whether it has it"
                        marks.append(self._failed(row, row.attempts + 1, "unknown", f"unknown outcome, still: {reason}"))
                        break  # the order's later rows wait for this one
                send.append(row)
            if send:
                sending.append(send[: self.batch_size])  # a longer order: the rest in a next round
        exchanges: list[list[Row]] = []
        for send in sending:  # whole orders into exchanges of at most batch_size
            if not exchanges or len(exchanges[-1]) + len(send) > self.batch_size:
                exchanges.append([])
            exchanges[-1].extend(send)
        for rows in exchanges:  # posting order across orders too (each order's rows keep theirs)
            rows.sort(key=lambda r: r.id)

        async def exchange(rows: list[Row]) -> None:
            async with gate:
                answer = await self._call(self.target.deliver_batch([delivery(r) for r in rows]), "deliver")
            outcomes = _per_delivery(answer, len(rows))
            verdicts = Counter(o.verdict.value for o in outcomes)
            if verdicts.keys() - {"delivered", "held"}:
                first = next(o for o in outcomes if o.verdict not in (Verdict.DELIVERED, Verdict.HELD))
                log.info("outbox_batch_not_all_delivered", output=self.target.name, deliveries=len(rows),
                         **{f"n_{k}": n for k, n in sorted(verdicts.items())}, reason=first.reason)
            marks.extend(self._marked(r, o, r.attempts + 1, quiet=True) for r, o in zip(rows, outcomes)
                         if o.verdict is not Verdict.HELD)  # held: not acted on, no attempt spent

        await asyncio.gather(*(exchange(x) for x in exchanges))

    async def attempt(self, row: Row) -> Mark:
        d = delivery(row)
        attempts = row.attempts + 1
        if row.status == "unknown":
            found = await self._call(self.target.find(d), "find")
            if found is True:
                log.info("outbox_found_on_target", output=self.target.name, key=row.key, attempts=attempts)
                return Mark(row.id, "delivered", attempts, utcnow())
            if not isinstance(found, bool):  # None, or the call failed: ask again later, never resend blindly
                reason = found.reason if isinstance(found, Outcome) else "the target cannot tell whether it has it"
                return self._failed(row, attempts, "unknown", f"unknown outcome, still: {reason}")
        outcome = await self._call(self.target.deliver(d), "deliver")
        if isinstance(outcome, bool | None) or outcome.verdict is Verdict.HELD:
            outcome = Outcome.retry(f"deliver answered {outcome!r}")
        return self._marked(row, outcome, attempts)

    def _marked(self, row: Row, outcome: Outcome, attempts: int, *, quiet: bool = False) -> Mark:
        if outcome.verdict is Verdict.DELIVERED:
            return Mark(row.id, "delivered", attempts, utcnow())
        if outcome.verdict is Verdict.PARK:
            log.warning("outbox_parked", output=self.target.name, key=row.key, order=row.order, reason=outcome.reason)
            return Mark(row.id, "parked", attempts, utcnow(), outcome.reason)
        status = "unknown" if outcome.verdict is Verdict.UNKNOWN else "pending"
        return self._failed(row, attempts, status, outcome.reason, quiet=quiet)

    def _failed(self, row: Row, attempts: int, status: str, reason: str, *, quiet: bool = False) -> Mark:
        if attempts >= self.max_attempts:
            why = f"after {attempts} attempts: {reason}"
            log.warning("outbox_parked", output=self.target.name, key=row.key, order=row.order, reason=why)
            return Mark(row.id, "parked", attempts, utcnow(), why)
        (log.debug if quiet else log.info)("outbox_retry", output=self.target.name, key=row.key, attempts=attempts,
                                           status=status, reason=reason)
        return Mark(row.id, status, attempts, outbox.backoff_until(utcnow(), self.backoff.delay(attempts)), reason)

    async def _call(self, call, what: str):
        """A target call, bounded in time; its exception becomes an outcome (targets should not raise)."""
        try:
            return await asyncio.wait_for(call, self.options.call_timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return Outcome.unknown(f"{what} took longer than {self.options.call_timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 — a target's bug must not end the worker
            log.error("outbox_target_raised", output=self.target.name, call=what, error=repr(exc))
            # deliver may have sent before raising: treated as unknown, so it is looked up, not resent
            return Outcome.unknown(target_message(f"{type(exc).__name__}: {exc}"))


def _per_delivery(answer: object, n: int) -> list[Outcome]:
    """A batch target's answer as one outcome per delivery; anything else is unknown for all (it may have sent)."""
    if isinstance(answer, Outcome):  # the call timed out or raised
        return [answer] * n
    if isinstance(answer, list) and len(answer) == n and all(isinstance(o, Outcome) for o in answer):
        return answer
    got = f"{len(answer)} outcomes" if isinstance(answer, list) else repr(answer)
    return [Outcome.unknown(target_message(f"deliver_batch answered {got} for {n} deliveries"))] * n


def _as_it_was(row: Row) -> Mark:
    """A row not attempted: its state before the round (in flight is undone)."""
    return Mark(row.id, row.status, row.attempts, row.next_at, row.last_error)


def overlaid(rows: list[Row], known: dict[int, Mark]) -> list[Row]:
    """The rows as read, with the outcomes not yet written laid over those the ledger still has open
    (in flight, or pending for a target whose rows are not marked in flight); delivered ones dropped.
    A row a person parked meanwhile is left as the ledger has it."""
    out = []
    for row in rows:
        m = known.get(row.id)
        if m is None or row.status not in outbox.OPEN:
            out.append(row)
        elif m.status != "delivered":
            out.append(dataclasses.replace(row, status=m.status, attempts=m.attempts, next_at=m.next_at,
                                           last_error=m.error))
    return out


def limited(chains: list[list[Row]], most: int) -> list[list[Row]]:
    """The chains cut to ``most`` rows in all (oldest orders first, each order's rows from its first)."""
    out, left = [], most
    for chain in chains:
        if left <= 0:
            break
        out.append(chain[:left])
        left -= len(out[-1])
    return out


def delivery(row: Row) -> Delivery:
    return Delivery(id=row.id, key=row.key, target=row.target, what=row.what, order=row.order, machine=row.machine,
                    payload=orjson.loads(row.payload), attempts=row.attempts, created_at=row.created_at)


def due_chains(rows: list[Row], now) -> list[list[Row]]:
    """Per production order, its rows that may be attempted now, in outbox order: up to the first
    that is parked or waiting for its next try (the rest of that order waits behind it). Rows of
    no order are independent of each other."""
    chains: dict[object, list[Row]] = {}
    blocked: set[object] = set()
    for row in rows:  # oldest first
        group = row.order if row.order is not None else ("row", row.id)
        if group in blocked:
            continue
        if row.status == "parked" or row.next_at > now:
            blocked.add(group)
            continue
        chains.setdefault(group, []).append(row)
    return list(chains.values())


class Outputs:
    """The workers of a mapping's outputs: routes written (unless ``routes`` is False: the gateway wrote
    them), targets built, one task each."""

    def __init__(self, engine: Engine, mapping: Mapping, *, owned: Callable[[], set[str] | None] = lambda: None,
                 options: WorkerOptions | None = None, routes: bool = True) -> None:
        self.engine = engine
        self.mapping = mapping
        self.owned = owned
        self.options = options
        self.routes = routes
        self.workers: dict[str, DeliveryWorker] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        if not self.mapping.outputs:
            return
        if self.routes:
            await asyncio.to_thread(outbox.set_routes, self.engine, registry.routes(self.mapping))
        for name, out in self.mapping.outputs.items():
            worker = DeliveryWorker(self.engine, registry.build(name, self.mapping), out, owned=self.owned,
                                    options=self.options)
            self.workers[name] = worker
            self._tasks[name] = asyncio.create_task(worker.run(), name=f"outbox-{name}")
            log.info("output_started", output=name, kind=out.kind,
                     machines=self.mapping.output_machines(name) or "all")

    def wake(self) -> None:
        for w in self.workers.values():
            w.wake()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Each worker ends after its round in progress; one still in a round after ``grace_s`` (a target
        that does not answer) is cancelled — what it had sent and not heard back about stays in flight."""
        for w in self.workers.values():
            w.finish()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=grace_s)
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 — stopping
                pass
        for w in self.workers.values():
            close = getattr(w.target, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
        self._tasks.clear()
        self.workers.clear()

    async def reload(self, mapping: Mapping) -> None:
        """A new mapping: its routes replace the old; the workers restart with its targets."""
        await reload_outputs(self, mapping)


async def reload_outputs(outputs: OutputsLike, mapping: Mapping) -> None:
    """Stop, drop the routes of the outputs the new mapping no longer has, start with the new mapping:
    the one reload of in-process workers (``Outputs``) and of the relay process (``OutputsProcess``)."""
    removed = set(outputs.mapping.outputs) - set(mapping.outputs)
    await outputs.stop()
    await asyncio.to_thread(outbox.drop_routes, outputs.engine, removed)
    outputs.mapping = mapping
    await outputs.start()


class OutputsLike(Protocol):
    engine: Engine
    mapping: Mapping

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
