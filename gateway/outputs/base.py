"""The contract between the outbox's delivery workers and a target (webhook, MQTT, an ERP).

A target sees one ``Delivery`` at a time and answers with an ``Outcome``; the worker decides
what happens to the outbox row (delivered, retried with backoff, parked). A target must
never raise for an expected failure (down, slow, 5xx, refused): it answers ``retry`` or
``park`` with the target's own message. It must never touch the ledger: the worker does.

A target that can take many deliveries in one exchange (a webhook whose receiver accepts the
batch body, MQTT publishing QoS 1 messages without waiting for each acknowledgement) also
offers ``deliver_batch`` and says how many it takes at once (``batch_size`` > 1): it answers
one ``Outcome`` per delivery, in the order given. The deliveries of one production order come
in posting order; one that is not delivered holds the later ones of its order back (``held``:
the target did nothing with them), as a single-delivery target would never have sent them.

The key (``Delivery.key``) is what makes at-least-once delivery an exactly-once effect: the
target sends it where the receiver can see it (an ``Idempotency-Key`` header, a client-
chosen document name, an external id) and ``find`` looks it up after an unknown outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Delivery:
    """One row of the outbox, as a target sees it."""

    id: int
    key: str  # "<confirmation or document id>:<what>:<target>": what the target sees (idempotency)
    target: str
    what: str  # "confirmation" | "reversal" | "adjustment" | "stock"
    order: str | None
    machine: str | None
    payload: dict[str, Any] = field(hash=False)  # JSON-able; Decimal as str; shaped as outputs.schema.json
    attempts: int = 0
    created_at: datetime | None = None


class Verdict(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # transient: down, slow, 5xx; the worker backs off and sends again
    UNKNOWN = "unknown"  # sent, but no answer (timeout after sending): find() before sending again
    PARK = "park"  # the target refused it on business grounds; a person decides (outbox retry|skip)
    HELD = "held"  # in a batch: not acted on because an earlier delivery of its order was not; no attempt


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""

    @classmethod
    def delivered(cls) -> Outcome:
        return cls(Verdict.DELIVERED)

    @classmethod
    def retry(cls, reason: str) -> Outcome:
        return cls(Verdict.RETRY, reason)

    @classmethod
    def unknown(cls, reason: str) -> Outcome:
        return cls(Verdict.UNKNOWN, reason)

    @classmethod
    def park(cls, reason: str) -> Outcome:
        return cls(Verdict.PARK, reason)

    @classmethod
    def held(cls, reason: str) -> Outcome:
        return cls(Verdict.HELD, reason)


@runtime_checkable
class Target(Protocol):
    """A configured output. ``deliver`` sends one delivery; ``find`` checks whether a delivery
    whose outcome was unknown already took effect on the target.

    ``find`` answers True (it is there: delivered), False (it is not: send it again) or None
    (cannot tell: the worker keeps the row unknown and asks again later, never resends blindly).
    ``deliver`` answers ``Outcome.unknown`` when the request was sent but no answer came (a
    timeout after sending); ``retry`` only when the target surely did not take it (refused
    connection, 5xx, 429).
    """

    name: str

    async def deliver(self, d: Delivery) -> Outcome: ...

    async def find(self, d: Delivery) -> bool | None: ...

    # Optional: ``async def close(self) -> None`` (the worker calls it at shutdown if present).
    # Optional: ``looks_up = False`` for a target whose ``find`` can never tell (MQTT): a row in
    # flight at a crash would be sent again anyway, so the worker does not mark rows in flight.


def looks_up(target: Target) -> bool:
    """Whether ``find`` can tell (so a row in flight is marked unknown first, to be asked about after a crash)."""
    return getattr(target, "looks_up", True)


@runtime_checkable
class BatchTarget(Target, Protocol):
    """A target that takes up to ``batch_size`` deliveries in one exchange.

    ``deliver_batch`` answers one ``Outcome`` per delivery, in the order given (a list of
    another length is taken as ``unknown`` for all). The rules of ``deliver`` hold per
    delivery; ``held`` says the target did not act on it (an earlier one of its order failed).
    """

    batch_size: int

    async def deliver_batch(self, ds: list[Delivery]) -> list[Outcome]: ...


def batches(target: Target) -> int:
    """How many deliveries the target takes in one exchange (1: one ``deliver`` per delivery)."""
    size = getattr(target, "batch_size", 1)
    return size if isinstance(target, BatchTarget) and size > 1 else 1


def target_message(text: str, limit: int = 500) -> str:
    """The target's own message, trimmed to what an outbox row keeps (one line, bounded)."""
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
