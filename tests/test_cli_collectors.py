"""Repetitive production as a user sees it: `collectors list | show`, `period close`, and the order
commands on a collector's number (`orders show`, `report wip`, `report journal`), with the
refusals one line on stderr."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.domain.repetitive import CollectorKey
from tests.integration.lines import ROOT
from tests.support import ledger_with_masterdata, post_units
from tests.test_cli_reports import gateway, rows

OCT = CollectorKey("HOUSING-B", "0001", "LINE-2", "2026-10")


@pytest.fixture
def db(tmp_path) -> str:
    """October's collector of the worked example with 300 housings confirmed (6 cartons accrued)."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = ledger_with_masterdata(url, (ROOT / "docs" / "worked-example-repetitive.yaml").read_text(), tmp_path)
    post_units(engine, 0, 300, order=OCT.number, at=datetime(2026, 10, 20, tzinfo=UTC), collector=OCT,
               machine="MOLD-05")
    engine.dispose()
    return url


def test_collectors_list_show_and_the_order_commands_on_a_collector(db):
    listed = gateway("collectors", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    [row] = rows(listed, OCT.number[:9])
    assert row == [OCT.number, "open", "300", "0", "300 PC", "386.13 EUR", "360.00 EUR", "26.13 EUR"]
    as_json = json.loads(gateway("collectors", "list", "--db", db, "--format", "json").stdout)
    assert [(r["number"], r["received"], r["target"]) for r in as_json] == [(OCT.number, "300", "360")]
    shown = gateway("collectors", "show", OCT.number, "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert "target 360.00 EUR = 300 PC received at standard" in shown.stdout and "(so far)" in shown.stdout
    assert "Standing order" in shown.stdout
    order = gateway("orders", "show", OCT.number, "--db", db)
    assert order.returncode == 0 and f"Order {OCT.number}: 0 PC HOUSING-B" in order.stdout
    wip = json.loads(gateway("report", "wip", "--db", db, "--format", "json").stdout)
    assert [(w["order"], w["material"], w["qty"]) for w in wip] == [(OCT.number, "CARTON", "6")]
    assert gateway("collectors", "list", "--period", "2026-11", "--db", db).stdout.strip() == \
        "no cost collectors of that selection"


def test_period_close_settles_october_and_refuses_what_it_cannot(db):
    bad = gateway("period", "close", "October", "--db", db)
    assert (bad.returncode, bad.stderr.strip()) == (
        1, "'October' is no period: write a month 2026-12, an ISO week 2026-W49 or a day 2026-12-03")
    closed = gateway("period", "close", "2026-10", "--reason", "month end", "--db", db)
    assert closed.returncode == 0, closed.stderr
    [row] = rows(closed, OCT.number[:9])
    assert row[:2] == [OCT.number, "closed"] and row[-3:] == ["389.73 EUR", "360.00 EUR", "29.73 EUR"]  # + cartons
    again = gateway("period", "close", "2026-10", "--db", db)
    assert (again.returncode, again.stderr.strip()) == (1, "period 2026-10 is closed already")
    wip = json.loads(gateway("report", "wip", "--db", db, "--format", "json").stdout)
    assert wip == []  # the cartons were issued at the close
    audit = json.loads(gateway("report", "audit", "--db", db, "--format", "json").stdout)
    [entry] = [a for a in audit if a["action"] == "period.close"]
    assert (entry["subject"], entry["reason"]) == ("2026-10", "month end")
    assert entry["detail"]["changed"]["closed"][OCT.number]["currency"] == "EUR"
    unknown = gateway("collectors", "show", "NOPE", "--db", db)
    assert unknown.returncode == 1 and "no cost collector NOPE" in unknown.stderr
