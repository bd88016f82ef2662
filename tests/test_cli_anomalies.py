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
