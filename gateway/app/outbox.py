"""The outbox: list deliveries; retry, park or skip them by hand (audited).

Never here: printing, or delivering (``gateway.outputs.worker`` delivers; this only moves rows
between states through ``gateway.ledger.outbox.act``).
"""

from __future__ import annotations

from datetime import datetime

from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import Model
from gateway.ledger import outbox
from gateway.ledger.audit import Action, Actor


class OutboxRow(Model):
    id: int
    key: str
    target: str
    what: str
    document: str
    order: str | None
    machine: str | None
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime
    delivered_at: datetime | None
    last_error: str


def _model(r: outbox.Row) -> OutboxRow:
    return OutboxRow(id=r.id, key=r.key, target=r.target, what=r.what, document=r.document, order=r.order,
                     machine=r.machine, status=r.status, attempts=r.attempts, created_at=r.created_at,
                     next_at=r.next_at, delivered_at=r.delivered_at, last_error=r.last_error)


@on_ledger
def list_outbox(engine, *, status: str | None = None, target: str | None = None, order: str | None = None,
                last: int = 500) -> list[OutboxRow]:
    """Deliveries newest first: by default those not delivered yet (pending, unknown, parked)."""
    if last < 1:
        raise AppError("invalid", f"--last must be 1 or more, got {last}")
    try:
        return [_model(r) for r in outbox.listed(engine, status=status, target=target, order=order, limit=last)]
    except outbox.OutboxRefused as exc:
        raise AppError("invalid", str(exc)) from None


@on_ledger
def act(engine, verb: str, ids: list[int], reason: str = "", *, actor: Actor) -> list[OutboxRow]:
    """``retry``, ``park`` or ``skip`` deliveries; all or nothing, with an audit row."""
    try:
        rows = outbox.act(engine, verb, ids, reason,
                          audit=Action(actor, f"outbox.{verb}", reason=reason, subject=" ".join(map(str, ids))))
    except outbox.OutboxRefused as exc:
        kind = "not_found" if str(exc).startswith("no delivery") else (
            "invalid" if "reason" in str(exc) or "name the" in str(exc) else "conflict")
        raise AppError(kind, str(exc)) from None
    return [_model(r) for r in rows]
