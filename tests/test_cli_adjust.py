"""`gateway adjust …` as a user runs it: what it prints, one-line refusals, exit codes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.ledger.test_adjustments import MASTERDATA, ORDER
from tests.support import ledger_with_masterdata, post_units
from tests.test_cli import gateway


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = ledger_with_masterdata(url, MASTERDATA, tmp_path)
    post_units(engine, 0, 30, order=ORDER, at=datetime.now(UTC))
    engine.dispose()
    return url


def test_each_kind_posts_and_says_what_it_posted(db):
    runs = [
        ("scrap", ORDER, "6", "--operation", "0010", "--reason", "DROPPED", "--note", "fell off"),
        ("rework", ORDER, "30", "--op", "0010", "--reason", "REWORK"),
        ("substitute", ORDER, "--item", "0010", "--with", "ALT", "--qty", "0.7", "--with-qty", "0.8",
         "--reason", "NO-RESIN"),
        ("consumption", ORDER, "--item", "0020", "--qty", "-5", "--reason", "COUNTED"),
    ]
    out = []
    for args in runs:
        result = gateway("adjust", *args, "--db", db)
        assert result.returncode == 0, result.stderr
        out.append(result.stdout.strip().split(": ", 1))
    assert [line for _, line in out] == [
        f"scrap of 6 PC CAP on order {ORDER}, 2 goods movement(s)",
        f"rework of 30 PC CAP on order {ORDER}, 1 goods movement(s)",
        f"substitution of 0.8 KG ALT on order {ORDER}, 2 goods movement(s)",
        f"consumption of -5 PC LINER on order {ORDER}, 1 goods movement(s)",
    ]
    scrap_doc = out[0][0]
    reversed_ = gateway("confirmations", "reverse", scrap_doc, "--reason", "entered twice", "--db", db)
    assert reversed_.returncode == 0, reversed_.stderr
    assert f"as R-{scrap_doc}" in reversed_.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("scrap", ORDER, "1", "--operation", "0010", "--reason", "lower"), "reason code 'lower' is not valid"),
    (("scrap", ORDER, "x", "--operation", "0010", "--reason", "X1"), "bad quantity 'x'"),
    (("rework", "999", "1", "--operation", "0010", "--reason", "X1"), "no order 999"),
    (("consumption", ORDER, "--item", "0010", "--qty", "-2", "--reason", "X1"), "cannot give back 2: only 1 is"),
    (("substitute", ORDER, "--item", "0010", "--with", "ALT", "--qty", "0.1", "--with-qty", "5", "--reason", "X1"),
     "not enough ALT at LS1"),
])
def test_a_refusal_is_one_line_and_exit_code_1(db, args, message):
    result = gateway("adjust", *args, "--db", db)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
