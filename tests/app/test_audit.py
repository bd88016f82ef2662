"""The audit trail: every manual action leaves one row, in its own transaction, with who, from where,
why and the ids of what it posted; the table is only ever inserted into.

Every manual action of the application layer runs here against a real ledger (SQLite and
PostgreSQL), in the order a shift might do them. A listener on the engine sees every
statement the code sends: none updates or deletes an audit row. The database refuses it too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from gateway.app import adjustments, anomalies, confirmations, error_queue, orders, stock
from gateway.app.audit import command_line, list_audit
from gateway.app.models import (
    AcceptAnomaly,
    AdjustAtOperation,
    AdjustConsumption,
    AdjustSubstitute,
    CountStock,
    IssueStock,
    ReceiveStock,
    RejectAnomaly,
    ReverseConfirmation,
)
from gateway.ledger import schema
from gateway.ledger.audit import Actor
from tests.ledger.test_adjustments import MASTERDATA, ORDER
from tests.support import ledger_with_masterdata, post_units

T = datetime(2026, 6, 1, 12, tzinfo=UTC)
ANNA = Actor(name="anna", kind="cli", host="line-pc-3", via="gateway stock receive LINER 200 -l LS1")
API = Actor(name="mes-bridge", kind="api", host="10.0.0.7", via="POST /api/v1/orders/7000001/complete")


@pytest.fixture
def ledger(ledger_url, tmp_path):
    # LINER's shortage waits for a person's `errors reprocess`, whose audit row is checked below.
    waits = MASTERDATA.replace("LINER:  {uom: PC}", "LINER:  {uom: PC, auto_reprocess: false}")
    assert waits != MASTERDATA
    engine = ledger_with_masterdata(ledger_url, waits, tmp_path)
    yield engine
    engine.dispose()


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.audit_log)).scalar_one()


def _anomaly(engine, start: int, end: int) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(schema.anomalies).values(
            machine="M1", counter="good", kind="implausible", detail="jump", start_pos=f"0:{start}",
            end_pos=f"0:{end}", counts_held=end - start, units_held=D(end - start), source_time=T, status="open",
            created_at=T).returning(schema.anomalies.c.id)).scalar_one()


def _last_movement(engine, kind: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.max(schema.goods_movements.c.id)).where(schema.goods_movements.c.kind == kind)
                            ).scalar_one()


def test_every_manual_action_leaves_one_row_with_actor_reason_and_postings_and_the_table_only_grows(ledger):
    statements: list[str] = []
    event.listen(ledger, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    c1 = post_units(ledger, 0, 30, order=ORDER, at=T)
    # 570 caps need 570 liners; 470 are left: 100 queued as a shortage for `errors reprocess`.
    c2 = post_units(ledger, 30, 600, order=ORDER, at=T)
    held_accept, held_reject = _anomaly(ledger, 600, 603), _anomaly(ledger, 603, 606)
    counts = [_rows(ledger)]
    done: list[tuple[str, str, str | None, list[str]]] = []  # action, reason, order, postings

    def did(action: str, reason: str, order: str | None, postings: list[str]) -> None:
        counts.append(_rows(ledger))
        done.append((action, reason, order, postings))

    with capture_logs() as logs:
        stock.receive(ledger, ReceiveStock(material="LINER", qty=D(200), location="LS1"), actor=ANNA)
        did("stock.receive", "", None, [f"movement:{_last_movement(ledger, '501')}"])

        r = error_queue.reprocess(ledger, None, actor=ANNA)
        assert len(r.resolved) == 1 and not r.still_open
        did("errors.reprocess", "", None, [c2.id])

        issued = stock.issue(ledger, IssueStock(material="PAINT", qty=D("0.2"), order=ORDER, location="LS1"),
                             actor=ANNA)
        did("stock.issue", "", ORDER, [issued.document])

        count = stock.count(ledger, CountStock(material="LINER", counted=D(95), location="LS1"), actor=ANNA)
        assert count.movement == "702"
        did("stock.count", "", None, [f"count:{count.id}", f"movement:{_last_movement(ledger, '702')}"])

        a = adjustments.scrap(ledger, AdjustAtOperation(order=ORDER, operation="0010", qty=D(3),
                                                        reason_code="DAMAGED", note="dropped"), actor=ANNA)
        did("adjust.scrap", "DAMAGED: dropped", ORDER, [a.document])
        a = adjustments.rework(ledger, AdjustAtOperation(order=ORDER, operation="0010", qty=D(3),
                                                         reason_code="REPAINT"), actor=ANNA)
        did("adjust.rework", "REPAINT", ORDER, [a.document])
        a = adjustments.substitute(ledger, AdjustSubstitute(order=ORDER, item="0010", with_material="ALT",
                                                            qty=D("0.5"), reason_code="SUBSTITUTION"), actor=ANNA)
        did("adjust.substitute", "SUBSTITUTION", ORDER, [a.document])
        a = adjustments.consumption(ledger, AdjustConsumption(order=ORDER, item="0020", delta=D(5),
                                                              reason_code="OVER_CONSUMPTION"), actor=ANNA)
        did("adjust.consumption", "OVER_CONSUMPTION", ORDER, [a.document])

        decided = anomalies.accept(ledger, AcceptAnomaly(anomaly_id=held_accept, reason="counted by hand"),
                                   actor=ANNA)
        did("anomalies.accept", "counted by hand", ORDER, [decided.confirmation_id])
        anomalies.reject(ledger, RejectAnomaly(anomaly_id=held_reject, reason="sensor bounce"), actor=ANNA)
        did("anomalies.reject", "sensor bounce", None, [])

        reversal = confirmations.reverse(ledger, ReverseConfirmation(confirmation_id=c1.id, reason="wrong order"),
                                         actor=ANNA)
        did("confirmations.reverse", "wrong order", ORDER, [reversal.reversal_id])

        orders.complete_order(ledger, ORDER, actor=API)
        did("orders.complete", "", ORDER, [f"O-{ORDER}"])

    assert counts == list(range(counts[0], counts[0] + len(done) + 1))  # one row per action, only ever more
    trail = list_audit(ledger)
    assert [(e.action, e.reason, e.order, e.postings) for e in trail[-len(done):]] == done
    for entry in trail[-len(done):]:
        who = API if entry.action == "orders.complete" else ANNA
        assert (entry.actor, entry.actor_kind, entry.host, entry.via) == (who.name, who.kind, who.host, who.via)
    assert trail[-2].subject == c1.id and trail[-2].detail["before"]["confirmation"]["yield_qty"] == "30"
    assert trail[-1].detail == {"before": {"status": "released"}, "changed": {"status": "completed"}}
    assert [e.id for e in list_audit(ledger, actor="mes-bridge")] == [trail[-1].id]
    assert len(list_audit(ledger, order=ORDER)) == 8  # all but receipt, reprocessing, count, write-off
    assert [e.action for e in list_audit(ledger, last=2)] == ["confirmations.reverse", "orders.complete"]
    assert list_audit(ledger, since=datetime(2999, 1, 1, tzinfo=UTC)) == []

    # Nothing in the code ever changes or removes an audit row.
    touching = [s for s in statements if re.search(r"\baudit_log\b", s)]
    assert len([s for s in touching if s.lstrip().upper().startswith("INSERT")]) == len(done)
    assert not [s for s in touching if re.match(r"\s*(UPDATE|DELETE)\b", s, re.I)]

    # Every log line that claims a posting came after its commit, and names what the audit row names.
    claimed = [e for e in logs if e["event"] in ("stock_received", "stock_issued", "stock_counted",
                                                  "adjustment_posted", "confirmation_reversed", "order_completed",
                                                  "anomaly_accepted", "error_reprocessed")]
    assert len(claimed) == len(done) - 1  # all but the write-off, which posts nothing
    assert all("committed_at" in e for e in claimed)
    assert not [e for e in logs if e["event"].endswith("_attempted")]


def test_a_refused_action_leaves_no_row_and_logs_nothing_as_posted(ledger):
    before = _rows(ledger)
    with capture_logs() as logs:
        with pytest.raises(Exception, match="only 1 L of PAINT"):
            stock.issue(ledger, IssueStock(material="PAINT", qty=D(5), order=ORDER, location="LS1"), actor=ANNA)
    assert _rows(ledger) == before
    assert [e["event"] for e in logs] == []


def test_the_database_refuses_to_change_or_remove_an_audit_row(ledger):
    stock.receive(ledger, ReceiveStock(material="LINER", qty=D(1), location="LS1"), actor=ANNA)
    for statement in (update(schema.audit_log).values(actor="someone else"), schema.audit_log.delete()):
        with pytest.raises(DBAPIError, match="audit_log is append-only"):
            with ledger.begin() as conn:
                conn.execute(statement)
    if ledger.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="audit_log is append-only: TRUNCATE refused"):
            with ledger.begin() as conn:
                conn.execute(text("TRUNCATE audit_log"))
    assert [e.actor for e in list_audit(ledger)] == ["anna"]


def test_the_command_line_in_the_trail_never_holds_a_password():
    argv = ["/x/gateway/cli.py", "stock", "receive", "LINER", "5", "-l", "LS1",
            "--db", "postgresql+psycopg://mes:s3cret@db:5432/ledger"]
    assert command_line(argv) == ("gateway stock receive LINER 5 -l LS1 "
                                  "--db postgresql+psycopg://mes:***@db:5432/ledger")
    assert command_line(["gateway", "report", "audit", "--db=postgresql://u:pw@h/d"]) == (
        "gateway report audit --db=postgresql://u:***@h/d")
