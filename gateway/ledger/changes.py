"""The change-set: what the reading path changed in memory, to be made durable together.

The service builds one ``ChangeSet`` per batch of values (and per confirm-timer round)
and hands it to the ledger writer, which merges what is queued and writes it in ONE
transaction (``gateway.ledger.posting.apply``): counter states, the units pending per
order operation, confirmations, anomalies and every unit counted, together, so the
ledger is always a consistent point to resume from.

A change-set holds changes only. It never carries figures about itself (how old its
readings are, how long it waited): those are read from what was committed, by the
writer's ``after_commit`` hooks (``gateway.ledger.stats``, ``gateway.http.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from gateway.domain.confirming import Pending, format_positions
from gateway.domain.records import Anomaly, Confirmation, CounterState
from gateway.domain.repetitive import CollectorKey

PendingKey = tuple[str, str, str]  # (machine, order, operation)


@dataclass
class ChangeSet:
    """Changes to make durable together. ``pendings[key] = None`` clears that pending."""

    # Every counter state reached, in the order reached (a counter read twice before a commit
    # is in it twice); the ledger keeps each counter's last (``latest_states``).
    counter_states: list[CounterState] = field(default_factory=list)
    pendings: dict[PendingKey, Pending | None] = field(default_factory=dict)
    machine_orders: dict[str, str] = field(default_factory=dict)
    # machine → (counters pending a job reset, those of them whose job change was unseen):
    # written with the order change and with each counter's first value after it, so a
    # restart in between still takes that value for the new job's (``machine_states``).
    job_resets: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    confirmations: list[Confirmation] = field(default_factory=list)
    anomalies: list[tuple[Anomaly, Decimal]] = field(default_factory=list)  # with units held
    # Cost collectors these changes use (repetitive production: a machine moved onto one, or
    # a confirmation of one), by number: created in the same transaction if not there yet.
    collectors: dict[str, CollectorKey] = field(default_factory=dict)
    # Every unit the machine's counters ever showed (increments and held jumps), up to and
    # including these changes: written as the machine's ``counted_units`` in the same
    # transaction as its counter state (an absolute figure, so a retried transaction writes it
    # again unchanged); ``gateway report`` checks confirmed + pending + held against it.
    counted: dict[str, Decimal] = field(default_factory=dict)
    # The lease token of each machine these changes were made under (``gateway.ledger.leases``):
    # the transaction writes a machine's changes only while its lease still carries that token.
    # A machine not named here is not fenced (tests and tools that post without leases).
    fences: dict[str, int] = field(default_factory=dict)

    def latest_states(self) -> dict[tuple[str, str], CounterState]:
        """Each counter's last state reached: what the ledger stores."""
        return {(s.machine, s.counter): s for s in self.counter_states}

    def can_merge(self, later: ChangeSet) -> bool:
        """False when a machine's changes were made under two leases (lost and taken again)."""
        return all(self.fences.get(m, tok) == tok for m, tok in later.fences.items())

    def machines(self) -> set[str]:
        return ({s.machine for s in self.counter_states} | {k[0] for k in self.pendings} | set(self.machine_orders)
                | set(self.job_resets) | {c.machine for c in self.confirmations} | {a.machine for a, _ in self.anomalies}
                | set(self.counted))

    def without(self, machines: set[str]) -> ChangeSet:
        """The same changes less those of ``machines`` (whose lease was lost: none of it may be written)."""
        return ChangeSet(
            counter_states=[s for s in self.counter_states if s.machine not in machines],
            pendings={k: v for k, v in self.pendings.items() if k[0] not in machines},
            machine_orders={k: v for k, v in self.machine_orders.items() if k not in machines},
            job_resets={k: v for k, v in self.job_resets.items() if k not in machines},
            confirmations=[c for c in self.confirmations if c.machine not in machines],
            anomalies=[(a, u) for a, u in self.anomalies if a.machine not in machines],
            collectors=dict(self.collectors),  # no machine's: creating a collector takes nothing from anyone
            counted={k: v for k, v in self.counted.items() if k not in machines},
            fences={k: v for k, v in self.fences.items() if k not in machines},
        )

    def merge(self, later: ChangeSet) -> None:
        self.counter_states.extend(later.counter_states)
        self.pendings.update(later.pendings)
        self.machine_orders.update(later.machine_orders)
        self.job_resets.update(later.job_resets)
        self.confirmations.extend(later.confirmations)
        self.anomalies.extend(later.anomalies)
        self.collectors.update(later.collectors)
        self.counted.update(later.counted)
        self.fences.update(later.fences)

    def describe(self) -> str:
        """A readable, complete account of the changes, for the dead-letter table and the log."""
        parts = [f"confirmation {c.id} machine={c.machine} order={c.order} op={c.operation} yield={c.yield_qty} "
                 f"scrap={c.scrap_qty} {c.uom} range={format_positions(c.start)}..{format_positions(c.end)}"
                 for c in self.confirmations]
        parts += [f"counter {m}/{k} at {s.position}" for (m, k), s in self.latest_states().items()]
        parts += [f"pending {key} = {p.units if p else 'cleared'}" for key, p in self.pendings.items()]
        parts += [f"machine {m} order={o!r}" for m, o in self.machine_orders.items()]
        parts += [f"anomaly {a.machine}/{a.counter} {a.kind.value}: {a.detail}" for a, _ in self.anomalies]
        parts += [f"units counted on {m}: {units}" for m, units in self.counted.items()]
        parts += [f"cost collector {number}" for number in self.collectors]
        return "\n".join(parts)

    def __bool__(self) -> bool:
        return bool(self.counter_states or self.pendings or self.machine_orders or self.confirmations or self.anomalies
                    or self.counted or self.job_resets or self.collectors)
