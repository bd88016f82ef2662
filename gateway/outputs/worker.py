"""Delivery workers: asyncio tasks on the gateway's loop that move outbox rows to their targets.

One worker per configured output. A round reads the target's oldest undelivered rows (in a
worker thread, on a pooled connection of its own: the ledger writer and the counting never
wait for it), groups them by production order and walks each order's rows in outbox order,
stopping at the first that is not delivered — so a target sees an order's documents in the
order they were posted. Orders go in parallel (``concurrency``). The outcomes are written
back in one short transaction at the end of the round.

At-least-once with the key: a row is marked delivered only after the target said so. An
UNKNOWN outcome (sent, no answer) is never sent again blindly: the next attempt first asks
``target.find``; True marks it delivered, False sends it, None waits and asks again. The
rows a round is about to send are marked ``unknown`` before the first call (one short
transaction), and those it did not reach get their state back at the end: a gateway killed
or stopped mid-send leaves what was in flight as unknown, so the next start asks the
target before sending it again (the target's dedupe by key covers what it cannot tell).

Retries back off per row with jitter (``Backoff.delay`` of its attempts); after
``max_attempts`` the row is parked with the target's last message, and so is a business
refusal at once. A parked row holds the later rows of its order back until a person retries
or skips it (``gateway outbox``). When a round delivered nothing and failed, the whole
worker also backs off, so a target that is down costs one attempt per order per pause.

Ownership: with leases, an instance delivers only the rows of the machines it owns (and
those of no machine); ``owned()`` says which. Must never: write a posting, hold a database
connection across a network call, or let a target's exception end the worker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine

from gateway.backoff import Backoff
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.outbox import Mark, Row
from gateway.mapping.model import Mapping, Output
from gateway.outputs.base import Delivery, Outcome, Target, Verdict, target_message
from gateway.outputs import registry

log = structlog.get_logger("gateway.outputs")


@dataclass
class WorkerOptions:
    poll_s: float = 0.25  # an idle worker looks for new rows this often (or at once when woken)
    batch: int = 500  # rows read per round
    concurrency: int = 8  # orders delivered in parallel
    call_timeout_s: float = 60.0  # a target call that takes longer is cut off (as unknown)


class DeliveryWorker:
    def __init__(self, engine: Engine, target: Target, out: Output, *,
                 owned: Callable[[], set[str] | None] = lambda: None, options: WorkerOptions | None = None) -> None:
        self.engine = engine
        self.target = target
        self.max_attempts = out.max_attempts
        self.backoff = Backoff(out.retry_min_s, max(out.retry_min_s, out.retry_max_s))
        self.pause = Backoff(min(0.5, out.retry_min_s), max(out.retry_min_s, out.retry_max_s))
        self.owned = owned
        self.options = options or WorkerOptions()
        self._wake = asyncio.Event()
        self.delivered = 0  # since start, for tests and benchmarks

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
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

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def round(self) -> tuple[int, int, int]:
        """One pass over the undelivered rows: (attempted, failed, delivered)."""
        rows = await asyncio.to_thread(outbox.undelivered, self.engine, self.target.name, self.options.batch,
                                       machines=self.owned())
        chains = due_chains(rows, t.utcnow())
        if not chains:
            return 0, 0, 0
        due = [row for chain in chains for row in chain]
        # In flight from here: a kill before the end of the round leaves these to be asked about first.
        await asyncio.to_thread(outbox.mark, self.engine, [
            Mark(r.id, "unknown", r.attempts, r.next_at, r.last_error) for r in due if r.status == "pending"])
        gate = asyncio.Semaphore(self.options.concurrency)
        marks: list[Mark] = []

        async def walk(chain: list[Row]) -> None:
            async with gate:
                for row in chain:
                    m = await self.attempt(row)
                    marks.append(m)
                    if m.status != "delivered":
                        return  # the order's later rows wait for this one

        await asyncio.gather(*(walk(c) for c in chains))
        reached = {m.id for m in marks}
        untouched = [Mark(r.id, r.status, r.attempts, r.next_at, r.last_error) for r in due if r.id not in reached]
        await asyncio.to_thread(outbox.mark, self.engine, marks + untouched)
        delivered = sum(m.status == "delivered" for m in marks)
        self.delivered += delivered
        return len(marks), len(marks) - delivered, delivered

    async def attempt(self, row: Row) -> Mark:
        d = delivery(row)
        attempts = row.attempts + 1
        if row.status == "unknown":
            found = await self._call(self.target.find(d), "find")
            if found is True:
                log.info("outbox_found_on_target", output=self.target.name, key=row.key, attempts=attempts)
                return Mark(row.id, "delivered", attempts, t.utcnow())
            if not isinstance(found, bool):  # None, or the call failed: ask again later, never resend blindly
                reason = found.reason if isinstance(found, Outcome) else "the target cannot tell whether it has it"
                return self._failed(row, attempts, "unknown", f"unknown outcome, still: {reason}")
        outcome = await self._call(self.target.deliver(d), "deliver")
        if isinstance(outcome, bool | None):
            outcome = Outcome.retry(f"deliver answered {outcome!r}")
        if outcome.verdict is Verdict.DELIVERED:
            return Mark(row.id, "delivered", attempts, t.utcnow())
        if outcome.verdict is Verdict.PARK:
            log.warning("outbox_parked", output=self.target.name, key=row.key, order=row.order, reason=outcome.reason)
            return Mark(row.id, "parked", attempts, t.utcnow(), outcome.reason)
        status = "unknown" if outcome.verdict is Verdict.UNKNOWN else "pending"
        return self._failed(row, attempts, status, outcome.reason)

    def _failed(self, row: Row, attempts: int, status: str, reason: str) -> Mark:
        if attempts >= self.max_attempts:
            why = f"after {attempts} attempts: {reason}"
            log.warning("outbox_parked", output=self.target.name, key=row.key, order=row.order, reason=why)
            return Mark(row.id, "parked", attempts, t.utcnow(), why)
        log.info("outbox_retry", output=self.target.name, key=row.key, attempts=attempts, status=status,
                 reason=reason)
        return Mark(row.id, status, attempts, outbox.backoff_until(t.utcnow(), self.backoff.delay(attempts)), reason)

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


def delivery(row: Row) -> Delivery:
    return Delivery(id=row.id, key=row.key, target=row.target, what=row.what, order=row.order, machine=row.machine,
                    payload=json.loads(row.payload), attempts=row.attempts, created_at=row.created_at)


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
    """The workers of a mapping's outputs: routes written, targets built, one task each."""

    def __init__(self, engine: Engine, mapping: Mapping, *, owned: Callable[[], set[str] | None] = lambda: None,
                 options: WorkerOptions | None = None) -> None:
        self.engine = engine
        self.mapping = mapping
        self.owned = owned
        self.options = options
        self.workers: dict[str, DeliveryWorker] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        if not self.mapping.outputs:
            return
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

    async def stop(self) -> None:
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
        removed = set(self.mapping.outputs) - set(mapping.outputs)
        await self.stop()
        await asyncio.to_thread(outbox.drop_routes, self.engine, removed)
        self.mapping = mapping
        await self.start()
