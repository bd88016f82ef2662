"""Reversal: the exact inverse of everything one document (confirmation) posted.

``reverse(posted)`` turns the postings of a confirmation — goods movements, activities,
genealogy edges, deferred (WIP / manual) components and still-open error items — into
their inverse: issues (261) come back as 262 to the same lot and location, receipts
(101) go out as 102, hours and cost are negated, genealogy edges are negated. It also
says how much to take back from the order's running plan totals (``carry``) and from
the operation's confirmed quantities, so that the next confirmation plans from the
right base.

History is never edited: the inverse is a new document linked to the original. Pure:
the ledger reads the postings and writes the result.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from decimal import Decimal

from gateway.domain.records import (
    ActivityPosting,
    BackflushError,
    GenealogyEdge,
    GoodsMovement,
    MovementKind,
    NotBackflushed,
)

_INVERSE = {
    MovementKind.GOODS_ISSUE: MovementKind.GOODS_ISSUE_REVERSAL,
    MovementKind.GOODS_ISSUE_REVERSAL: MovementKind.GOODS_ISSUE,
    MovementKind.GOODS_RECEIPT: MovementKind.GOODS_RECEIPT_REVERSAL,
    MovementKind.GOODS_RECEIPT_REVERSAL: MovementKind.GOODS_RECEIPT,
}


@dataclass(frozen=True, slots=True)
class Posted:
    """What one confirmation posted, as the ledger holds it."""

    movements: tuple[GoodsMovement, ...] = ()
    activities: tuple[ActivityPosting, ...] = ()
    genealogy: tuple[GenealogyEdge, ...] = ()
    deferred: tuple[NotBackflushed, ...] = ()
    open_errors: tuple[BackflushError, ...] = ()  # planned but never issued; cancelled


@dataclass(frozen=True, slots=True)
class Reversal:
    movements: tuple[GoodsMovement, ...]
    activities: tuple[ActivityPosting, ...]
    genealogy: tuple[GenealogyEdge, ...]
    deferred: tuple[NotBackflushed, ...]
    carry: tuple[tuple[str, Decimal], ...]  # negative deltas to the order's plan totals


def reverse(posted: Posted) -> Reversal:
    for m in posted.movements:
        if m.kind not in _INVERSE:
            raise ValueError(f"movement kind {m.kind.value} cannot be reversed as part of a confirmation")
    carry: dict[str, Decimal] = defaultdict(Decimal)
    for m in posted.movements:
        if m.kind in (MovementKind.GOODS_ISSUE, MovementKind.GOODS_ISSUE_REVERSAL) and m.bom_item:
            carry[f"item:{m.bom_item}"] += m.qty  # issues are negative: taking them back lowers the plan
    for e in posted.open_errors:
        carry[f"item:{e.bom_item}"] -= e.missing_qty
    for d in posted.deferred:
        carry[f"item:{d.bom_item}"] -= d.qty
    for a in posted.activities:
        carry[f"{a.operation}:{a.activity}:cost"] -= a.cost
        if a.activity != "overhead":
            carry[f"{a.operation}:{a.activity}:hours"] -= a.hours
    return Reversal(
        movements=tuple(replace(m, kind=_INVERSE[m.kind], qty=-m.qty) for m in posted.movements),
        activities=tuple(replace(a, hours=-a.hours, cost=-a.cost) for a in posted.activities),
        genealogy=tuple(replace(g, qty=-g.qty) for g in posted.genealogy),
        deferred=tuple(replace(d, qty=-d.qty) for d in posted.deferred),
        carry=tuple(sorted((k, v) for k, v in carry.items() if v)),
    )
