"""The application layer on real ledgers: guarded opening, the checks before a posting, typed answers."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from gateway.app import AppError, reports, stock
from gateway.app.checks import quantity
from gateway.app.ledger import open_ledger
from gateway.app.models import CountStock, IssueStock
from gateway.ledger.audit import Actor
from gateway.ledger import schema
from gateway.ledger.schema import open_engine
from tests.ledger.test_adjustments import MASTERDATA, ORDER
from tests.support import ledger_with_masterdata, post_units


ME = Actor(name="tester", kind="cli", host="test-host", via="gateway (test)")


def refusal(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(AppError) as caught:
        call(*args, **kwargs)
    return caught.value.kind, caught.value.detail


@pytest.fixture
def ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = ledger_with_masterdata(url, MASTERDATA, tmp_path)
    post_units(engine, 0, 30, order=ORDER, at=datetime.now(UTC))
    engine.dispose()
    engine = open_ledger(url)
    yield engine
    engine.dispose()


def movements(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.goods_movements)).scalar_one()


def test_a_url_that_names_no_ledger_is_refused_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refusal(open_ledger, "notaurl", create=True) == (
        "invalid", "--db 'notaurl' is not a database URL: write sqlite:///FILE (a file; sqlite:////abs/path) or "
                   "postgresql+psycopg://USER@HOST:5432/DATABASE")
    assert refusal(open_ledger, "sqlite://", create=True)[0] == "invalid"
    assert refusal(open_ledger, "sqlite:///:memory:")[0] == "invalid"
    kind, detail = refusal(open_ledger, "mysql+pymysql://gw:S3CRET@db/ledger")
    assert kind == "invalid" and "gw:***@db" in detail and "S3CRET" not in detail
    assert refusal(open_ledger, f"sqlite:///{tmp_path / 'none.sqlite'}") == (
        "not_found", f"no ledger at {tmp_path / 'none.sqlite'} (give it with --db)")
    assert list(tmp_path.iterdir()) == [], "neither a file named like the URL nor an empty ledger"


def test_a_database_without_a_ledger_is_not_one_and_stays_empty(tmp_path):
    (tmp_path / "empty.sqlite").touch()
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    assert refusal(open_ledger, url) == ("not_found", f"{url} holds no ledger yet; load master data "
                                                      "(`gateway masterdata load`) or run the gateway first")
    import sqlite3

    with sqlite3.connect(tmp_path / "empty.sqlite") as raw:
        assert raw.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,), "a read created no table"
    open_ledger(url, create=True).dispose()  # loading master data may create it
    open_ledger(url).dispose()


def test_a_ledger_of_another_schema_version_is_a_conflict(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 2"))
    engine.dispose()
    kind, detail = refusal(open_ledger, url)
    assert kind == "conflict" and detail.startswith(f"the ledger at {url} has schema version 2, this gateway needs "
                                                    f"version {schema.SCHEMA_VERSION}: upgrade it with `gateway db upgrade")


def test_a_read_only_ledger_reads_but_refuses_a_write_in_one_sentence(ledger, tmp_path):
    ro = open_ledger(f"sqlite:///file:{tmp_path / 'ledger.sqlite'}?mode=ro&uri=true")
    assert [r.qty for r in reports.summary(ro).stock if r.material == "LINER"] == [Decimal(470)]
    kind, detail = refusal(stock.count, ro, CountStock(material="LINER", counted=Decimal(400), location="LS1"), actor=ME)
    assert (kind, detail) == ("unavailable", f"the ledger file {tmp_path / 'ledger.sqlite'} is read-only: SQLite "
                              "needs write access to the file and its folder, also to read (WAL mode); fix the "
                              "permissions or copy it elsewhere")
    ro.dispose()


@pytest.mark.skipif(os.geteuid() == 0, reason="file permissions do not bind root")
def test_a_ledger_file_without_write_access_is_refused_at_once(ledger, tmp_path):
    (tmp_path / "ledger.sqlite").chmod(0o444)
    assert refusal(open_ledger, f"sqlite:///{tmp_path / 'ledger.sqlite'}")[1].startswith(
        f"the ledger file {tmp_path / 'ledger.sqlite'} is read-only")


def test_postgres_failures_name_the_server_never_the_password(pg_available):
    from tests.conftest import PG_URL
    from sqlalchemy.engine import make_url

    server = make_url(PG_URL)
    url = server.set(database="no_such_ledger_db", username="gw", password="S3CRET")
    kind, detail = refusal(open_ledger, url.render_as_string(hide_password=False))
    assert "S3CRET" not in detail
    assert kind in ("not_found", "unavailable")  # no such database, or (with password auth) no such user
    kind, detail = refusal(open_ledger, "postgresql://gw:S3CRET@127.0.0.1:1/ledger")
    assert (kind, detail) == ("unavailable", "cannot reach the PostgreSQL server at 127.0.0.1:1: connection refused; "
                                             "start it or fix the host and port in --db")


def test_a_count_at_an_unknown_location_posts_nothing(ledger):
    before = movements(ledger)
    assert refusal(stock.count, ledger, CountStock(material="LINER", counted=Decimal(4940), location="LS-1"), actor=ME) == (
        "not_found", "unknown location 'LS-1'; did you mean LS1?")
    assert refusal(stock.count, ledger, CountStock(material="LINER", counted=Decimal(1), location="WAREHOUSE-9"), actor=ME) == (
        "not_found", "unknown location 'WAREHOUSE-9'; known: FG, LS1")
    assert refusal(stock.count, ledger, CountStock(material="RESIN", counted=Decimal(1), location="LS1", lot="R9"), actor=ME) == (
        "not_found", "no lot 'R9' of RESIN")
    assert refusal(stock.count, ledger, CountStock(material="LINER", counted=Decimal("1.5"), location="LS1"), actor=ME) == (
        "invalid", "LINER is counted in 0 decimal(s) of PC; got 1.5")
    assert movements(ledger) == before
    done = stock.count(ledger, CountStock(material="LINER", counted=Decimal(460), location="LS1"), actor=ME)
    assert (done.book_qty, done.difference, done.movement) == (Decimal(470), Decimal(-10), "702")
    assert movements(ledger) == before + 1


def test_an_issue_is_checked_against_order_material_location_and_lot(ledger):
    before = movements(ledger)
    ask = dict(material="RESIN", qty=Decimal("0.25"), order=ORDER, location="LS1", lot="R2")
    assert refusal(stock.issue, ledger, IssueStock(**{**ask, "order": "7000009"}), actor=ME) == ("not_found", "no order 7000009")
    assert refusal(stock.issue, ledger, IssueStock(**{**ask, "lot": ""}), actor=ME) == (
        "invalid", "RESIN is lot-tracked: give the lot with --lot")
    assert refusal(stock.issue, ledger, IssueStock(**{**ask, "qty": Decimal("0.0001")}), actor=ME) == (
        "invalid", "RESIN is kept in 3 decimal(s) of KG; got 0.0001")
    assert refusal(stock.issue, ledger, IssueStock(**{**ask, "qty": Decimal(0)}), actor=ME) == (
        "invalid", "quantity must be positive, got 0")
    assert movements(ledger) == before
    issued = stock.issue(ledger, IssueStock(**ask), actor=ME)
    assert (issued.qty, issued.uom, issued.document[:2]) == (Decimal("0.25"), "KG", "M-")


def test_quantities_typed_by_a_person():
    assert quantity(" 12.5 ") == Decimal("12.5")
    for bad in ("4,94x", "NaN", "inf", ""):
        with pytest.raises(AppError) as caught:
            quantity(bad)
        assert caught.value.detail == f"bad quantity {bad!r}: write a number like 4940 or 12.5"


def test_trace_of_a_lot_used_nowhere_is_an_empty_answer_not_an_error(ledger):
    nowhere = reports.trace(ledger, "A1", direction="forward")
    assert (nowhere.lot, nowhere.lines) == ("A1", [])
    used = reports.trace(ledger, "R1", direction="forward")
    assert [(x.depth, x.material, x.lot, x.qty) for x in used.lines] == [(0, "RESIN", "R1", None),
                                                                          (1, "CAP", "7000001", Decimal("0.5"))]
    assert refusal(reports.trace, ledger, "B-0", direction="forward") == ("not_found", "no lot B-0 in the ledger")


def test_answers_are_json_with_exact_decimals(ledger):
    summary = reports.summary(ledger)
    dumped = summary.model_dump(mode="json")
    assert {"material": "RESIN", "location": "LS1", "lot": "R2", "uom": "KG", "qty": "49.5"} in dumped["stock"]
    assert dumped["machines"][0]["machine"] == "M1" and dumped["machines"][0]["confirmed_yield"] == "30"


def test_what_no_ledger_can_hold_is_refused_before_a_query_is_built(ledger):
    from gateway.app import error_queue, orders

    assert refusal(error_queue.reprocess, ledger, [1, 2**63], actor=ME) == (
        "invalid", f"{2**63} is out of range: no id or number in the ledger is beyond ±{2**63 - 1}")
    # A terminal or a JSON body can carry a lone surrogate; no database stores it as text.
    assert refusal(orders.show_order, ledger, "1000\udc80") == (
        "invalid", "'1000\\udc80' is not valid text (it holds a lone surrogate, shown as \\u…); type it again")


def test_stock_on_hand_refuses_a_material_or_location_it_does_not_know(ledger):
    from gateway.app import stock

    rows = stock.on_hand(ledger)
    assert rows == sorted(rows, key=lambda r: (r.material, r.location, r.lot)) and rows
    one = rows[0]
    assert stock.on_hand(ledger, material=one.material, location=one.location) == [
        r for r in rows if (r.material, r.location) == (one.material, one.location)]
    kind, detail = refusal(stock.on_hand, ledger, material=one.material[:-1])
    assert kind == "not_found" and detail.startswith(f"unknown material {one.material[:-1]!r}")
    kind, detail = refusal(stock.on_hand, ledger, location="NOWHERE")
    assert (kind, detail.split(";")[0]) == ("not_found", "unknown location 'NOWHERE'")
