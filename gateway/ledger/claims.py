"""Log lines that claim a posting, written only after the transaction that made it has committed.

A line such as ``confirmation_posted`` is evidence: a plant reads it as "this is in the
ledger". So the code that posts never logs such a line itself. It *claims* it here
(``claim``), and the claims of a transaction are logged by whoever commits it — ``transaction``
for the operations a person starts, the writer thread for the service — once COMMIT has
returned, once per posting, each with the transaction's commit time (``committed_at``). A
transaction that fails (a refusal, a full disk, a lost connection, at any statement or at
COMMIT itself) logs its claims as ``<event>_attempted`` with the error instead; a savepoint
that rolls back (``tentative``) drops the claims made in it, since nothing of it stays.

The claims are collected per transaction in a context variable: the posting code deep
down (``posting.backflush``, ``LedgerTx.savepoint``) needs no extra argument, and each thread
(the writer, a CLI command, an HTTP worker) collects only its own. Outside a collecting
transaction (tests and benchmarks that call ``posting.apply`` in a transaction of their
own) a claim is dropped: no one could say whether it committed.

Never here: opening a transaction other than in ``transaction``, retrying, or logging a claim
before its transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection, Engine

from gateway.ledger.failures import lost_to_transient, root_error
from gateway.clock import utcnow

log = structlog.get_logger("gateway.ledger")


@dataclass(frozen=True)
class Claim:
    """One log line to write once its transaction committed; ``posting`` names what it posted
    (a confirmation or document id such as ``R-…``, ``A-…``, ``M-…``, or ``movement:ID``, ``count:ID``;
    empty for a line that posted nothing, such as an anomaly written off)."""

    event: str
    posting: str
    fields: dict[str, object]
    level: str = "info"


@dataclass
class Claims:
    """What one transaction claims, in the order it was claimed."""

    items: list[Claim] = field(default_factory=list)

    def postings(self) -> list[str]:
        """The ids of what this transaction posted, each once, in order."""
        return list(dict.fromkeys(c.posting for c in self.items if c.posting))

    def committed(self, at: datetime) -> None:
        """Log every claim: its transaction committed at ``at``."""
        stamp = at.isoformat()
        for c in self.items:
            getattr(log, c.level)(c.event, **c.fields, committed_at=stamp)

    def attempted(self, exc: BaseException) -> None:
        """Log every claim as ``<event>_attempted``: its transaction did not commit (``exc``)."""
        error = root_error(exc)
        for c in self.items:
            log.warning(f"{c.event}_attempted", **c.fields, error=error,
                        hint="not in the ledger: the transaction did not commit")


_current: ContextVar[Claims | None] = ContextVar("ledger_claims", default=None)


def claim(event: str, posting: str, *, level: str = "info", **fields: object) -> None:
    """Claim a log line for the current transaction; written after its commit (module docstring)."""
    claims = _current.get()
    if claims is not None:
        claims.items.append(Claim(event, posting, fields, level))


@contextmanager
def tentative() -> Iterator[None]:
    """A part of a transaction that may roll back alone (a savepoint): if it raises, its claims go too.

    Unless the failure is transient (a full disk, a lost connection): then the whole transaction
    fails, and its claims, these included, are logged as attempted."""
    claims = _current.get()
    mark = len(claims.items) if claims is not None else 0
    try:
        yield
    except BaseException as exc:
        if claims is not None and not lost_to_transient(exc):
            del claims.items[mark:]
        raise


@contextmanager
def collecting() -> Iterator[Claims]:
    """Collect the claims made in this block (one transaction's)."""
    claims = Claims()
    token = _current.set(claims)
    try:
        yield claims
    finally:
        _current.reset(token)


@contextmanager
def transaction(bind: Engine | Connection) -> Iterator[tuple[Connection, Claims]]:
    """``begin()`` on an engine, or on a connection the caller keeps, whose claims are logged after
    its commit, or as attempted if it fails."""
    with collecting() as claims:
        try:
            if isinstance(bind, Connection):
                with bind.begin():
                    yield bind, claims
            else:
                with bind.begin() as conn:
                    yield conn, claims
        except BaseException as exc:
            claims.attempted(exc)
            raise
        claims.committed(utcnow())
