"""Values in money as a user sees them: `report accuracy`, `report errors`, `report wip`,
`errors list --all` (who cleared an item) and `orders show` (consumption basis and variance value)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support import ledger_with_masterdata, masterdata_fixture, post_units
from tests.test_cli_reports import gateway, rows

MASTERDATA = masterdata_fixture("valve_priced_grease_in_chf")


@pytest.fixture
def db(tmp_path) -> str:
    """40 valves confirmed: 80 seals needed, 10 there (70 on the error queue); 4 cartons accrued."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = ledger_with_masterdata(url, MASTERDATA, tmp_path)
    post_units(engine, 0, 40, order="5000001", at=datetime.now(UTC))
    engine.dispose()
    return url


def test_errors_are_valued_and_a_receipt_clears_them_naming_itself(db):
    report = gateway("report", "errors", "--db", db)
    assert report.returncode == 0, report.stderr
    assert [r[:5] for r in rows(report, "SEAL")] == [["SEAL", "1", "70", "PC", "24.50 EUR"]]
    assert "value missing in open errors: 24.50 EUR" in report.stdout

    received = gateway("stock", "receive", "SEAL", "100", "--location", "LS1", "--db", db)
    assert received.returncode == 0, received.stderr
    listed = gateway("errors", "list", "--all", "--db", db)
    [item] = rows(listed, "1 ")
    assert item[2:7] == ["5000001", "SEAL", "LS1", "0 PC", "0.00 EUR"]
    assert item[7].startswith("resolved by movement:")
    assert gateway("errors", "list", "--db", db).stdout.count("SEAL") == 0


def test_accuracy_shows_book_and_difference_value(db):
    counted = gateway("stock", "count", "GREASE", "790.5", "-l", "LS1", "--db", db)
    assert counted.returncode == 0, counted.stderr  # book: 1000 − 40 × 0.5 = 980 g
    [accuracy, _] = rows(gateway("report", "accuracy", "--db", db), "GREASE")
    assert accuracy[2:] == [accuracy[2], "980", "790.5", "-189.5", "G", "80.66 %", "11.76 CHF", "-2.27 CHF"]


def test_wip_lists_accrued_order_completion_components_with_value(db):
    wip = gateway("report", "wip", "--db", db)
    assert wip.returncode == 0, wip.stderr
    assert rows(wip, "5000001") == [["5000001", "WC1", "0010", "0030", "CARTON", "4", "PC", "4.40 EUR"]]
    assert "total: 4.40 EUR" in wip.stdout
    shown = gateway("orders", "show", "5000001", "--db", db)
    [seal, seal_value] = [r for r in rows(shown, "0010") if r[1] == "SEAL"]
    assert seal[3].startswith("operation") and seal[4] == "80"  # (the rule's cell wraps at 120 columns)
    assert seal_value == ["0010", "SEAL", "total (default)", "-24.50 EUR", "0.00 EUR"], "70 of 80 not issued"
    [carton, carton_value] = rows(shown, "0030")
    assert carton[3].startswith("order_co") and carton[4] == "4"
    assert carton_value == ["0030", "CARTON", "yield (BOM item)", "-4.40 EUR", "4.40 EUR"]
    completed = gateway("orders", "complete", "5000001", "--db", db)
    assert completed.returncode == 0, completed.stderr
    assert gateway("report", "wip", "--db", db).stdout.strip() == (
        "no work in process: no order-completion component is accrued and not issued")
