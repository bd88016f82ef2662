"""`gateway anomalies`: one line and exit 1 for every refusal, never a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from gateway.cli import app
from gateway.ledger.schema import open_engine

runner = CliRunner()


def test_refusals_are_one_line(tmp_path):
    missing = f"sqlite:///{tmp_path / 'none.sqlite'}"
    result = runner.invoke(app, ["anomalies", "list", "--db", missing])
    assert result.exit_code == 1 and "no ledger at" in result.stderr
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    open_engine(db).dispose()
    assert runner.invoke(app, ["anomalies", "list", "--db", db]).stdout.strip() == "no open anomalies"
    for command in ("accept", "reject"):
        result = runner.invoke(app, ["anomalies", command, "7", "--db", db])
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == ["refused: no anomaly 7 (see `gateway anomalies list --all`)"]
    result = runner.invoke(app, ["anomalies", "accept", "seven", "--db", db])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_held_units_are_listed_and_assigned_from_the_cli(tmp_path):
    from tests.ledger.test_held_units import MASTERDATA, hold
    from tests.support import ledger_with_masterdata

    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    from sqlalchemy import update

    from gateway.ledger import schema

    engine = ledger_with_masterdata(db, MASTERDATA, tmp_path)
    with engine.begin() as conn:
        conn.execute(update(schema.production_orders).where(schema.production_orders.c.number == "5000009")
                     .values(status="completed"))
    anomaly = hold(engine, "M1", "", 12)
    engine.dispose()
    runner = CliRunner()
    listed = runner.invoke(app, ["anomalies", "list", "--db", db])
    assert listed.exit_code == 0, listed.output
    assert f"{anomaly:>6}  2026-06-01 12:00:00  M1/-  unknown_order  recorded  held 12 under order '' for " \
        in listed.output and "(assign: --order O)  no order number on the machine" in listed.output
    refused = runner.invoke(app, ["anomalies", "assign", str(anomaly), "--order", "5000009", "--db", db])
    assert (refused.exit_code, refused.output.strip().splitlines()[-1]) == (
        1, "refused: order 5000009 is completed: held units are posted to a released order only")
    done = runner.invoke(app, ["anomalies", "assign", str(anomaly), "--order", "5000001", "--db", db])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"anomaly {anomaly}: 12 held units confirmed on order 5000001 as C-")
    assert runner.invoke(app, ["anomalies", "list", "--db", db]).output.strip() == "no open anomalies"
