"""The audit trail: every manual action, who did it, from where, when, why, and what it posted.

A person changes the ledger by hand through the CLI, the HTTP API or the console:
completing an order, reversing a confirmation, an adjustment, a stock receipt, issue or
count, deciding an anomaly, reprocessing the error queue, loading master data. Each of
these runs in one transaction (``manual``), and the ``audit_log`` row that records it is
written IN that transaction, after its postings: the row exists exactly when the
postings do. It names the ``Actor`` (the OS user and host of a command with its command
line, or the API token's name with the client's address and the endpoint), the action,
the reason given, the order and what it acted on, the ids of what it posted (the
transaction's claims, ``gateway.ledger.claims``, plus any the action adds), and, as JSON,
what the ledger looked like before and what changed.

Never here: an UPDATE or DELETE of ``audit_log`` (it is append-only; the database refuses
both too, see ``schema.AUDIT_APPEND_ONLY``), or a decision about what an action posts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, Engine, insert, select

from gateway.clock import utcnow
from gateway.ledger import claims
from gateway.ledger import schema

ActorKind = Literal["cli", "api", "console"]


@dataclass(frozen=True)
class Actor:
    """Who started a manual action, and from where."""

    name: str  # the OS user of a command, the API token's name
    kind: ActorKind
    host: str  # the host a command ran on, the API client's address
    via: str  # the command line without secrets, or the HTTP method and endpoint


@dataclass(frozen=True)
class Action:
    """A manual action to record: who, which, and the reason a person gave."""

    actor: Actor
    name: str  # e.g. "stock.receive", "confirmations.reverse"
    reason: str = ""
    order: str | None = None
    subject: str = ""  # what it acts on: a confirmation, an anomaly, a material …
    detail: dict[str, object] = field(default_factory=dict)  # what the caller knows: a file's SHA-256, …


@dataclass
class Record:
    """Filled in by the action while its transaction runs; written with the audit row at its end."""

    conn: Connection
    before: dict[str, object] = field(default_factory=dict)  # the ledger as the action found it
    changed: dict[str, object] = field(default_factory=dict)  # what it changed beyond its postings
    postings: list[str] = field(default_factory=list)  # ids beyond the transaction's claims
    order: str | None = None  # set when the action finds it out (an anomaly's order)
    subject: str | None = None


@contextmanager
def manual(engine: Engine, action: Action | None) -> Iterator[Record]:
    """One transaction for one manual action; its audit row goes in last, in the same transaction.

    Its claims are logged after the commit (``claims.transaction``). ``action`` None: a caller
    that is no person's action (tests, tools), recorded nowhere."""
    with claims.transaction(engine) as (conn, claimed):
        record = Record(conn)
        yield record
        if action is not None:
            write(conn, action, record, claimed.postings())


def write(conn: Connection, action: Action, record: Record, claimed: list[str]) -> None:
    """Insert the audit row of ``action`` (the only statement this module makes on ``audit_log``)."""
    postings = list(dict.fromkeys([*claimed, *record.postings]))
    detail = {**action.detail, **({"before": record.before} if record.before else {}),
              **({"changed": record.changed} if record.changed else {})}
    a = action.actor
    conn.execute(insert(schema.audit_log), [{
        "at": utcnow(), "actor": a.name[:128], "actor_kind": a.kind, "host": a.host[:255], "via": a.via,
        "action": action.name, "reason": action.reason, "order_no": record.order or action.order,
        "subject": (record.subject or action.subject)[:128], "postings": " ".join(postings),
        "detail": json.dumps(detail, default=str, sort_keys=True),
    }])


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    actor_kind: str
    host: str
    via: str
    action: str
    reason: str
    order: str | None
    subject: str
    postings: tuple[str, ...]
    detail: dict


def read(engine: Engine, *, since: datetime | None = None, actor: str | None = None, order: str | None = None,
         last: int | None = None) -> list[AuditRow]:
    """Audit rows, oldest first (the ``last`` ones, if given): since a time, of one actor, of one order."""
    a = schema.audit_log.c
    q = select(schema.audit_log)
    if since is not None:
        q = q.where(a.at >= since)
    if actor is not None:
        q = q.where(a.actor == actor)
    if order is not None:
        q = q.where(a.order_no == order)
    if last is not None:
        q = q.order_by(a.id.desc()).limit(last)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return sorted((AuditRow(r.id, r.at, r.actor, r.actor_kind, r.host, r.via, r.action, r.reason, r.order_no,
                            r.subject, tuple(r.postings.split()), json.loads(r.detail or "{}")) for r in rows),
                  key=lambda r: r.id)
