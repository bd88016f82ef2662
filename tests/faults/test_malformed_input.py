"""Fault 9: malformed input never earns a traceback: a file:line error or success.

Hypothesis mutates a valid mapping and the demo master data (lines dropped, duplicated,
re-indented, spans replaced by arbitrary text) and feeds them to ``gateway validate`` and
``gateway masterdata load``; and it sends arbitrary values on a PLC's order-number tag
into the running service, which must record a bad value and keep counting.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli import app
from gateway.sources.base import Quality
from gateway.ledger.masters import store_masterdata
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.service import Gateway
from gateway.sources.base import ORDER_ROLE, TagValue
from tests.integration.lines import MASTERDATA, ROOT, line_mapping

CASE = ROOT / "tests" / "mappings" / "valid_two_machines_checked_against_masterdata"
runner = CliRunner()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, text: str) -> str:
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "indent", "dedent", "replace", "insert"]))
        if action == "drop":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "indent":
            lines[i] = draw(st.sampled_from([" ", "\t", "    "])) + lines[i]
        elif action == "dedent":
            lines[i] = lines[i].lstrip()
        else:
            junk = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12))
            if action == "insert":
                lines.insert(i, junk)
            else:
                a = draw(st.integers(0, len(lines[i])))
                b = draw(st.integers(a, len(lines[i])))
                lines[i] = lines[i][:a] + junk + lines[i][b:]
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


def _answer_is_clean(result, name: str) -> None:
    out = result.stdout + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    assert result.exit_code in (0, 1), out
    if result.exit_code == 1:
        first = out.strip().splitlines()[0]
        assert re.match(rf"^{re.escape(name)}:\d+: ", first), first


@FAST
@given(text=mutated((CASE / "mapping.yaml").read_text()))
def test_mutated_mapping_is_an_error_with_a_line_or_valid(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("masterdata.yaml").write_text((CASE / "masterdata.yaml").read_text())
    Path("mapping.yaml").write_text(text, encoding="utf-8")
    _answer_is_clean(runner.invoke(app, ["validate", "mapping.yaml"]), "mapping.yaml")


@FAST
@given(text=mutated((ROOT / MASTERDATA).read_text()))
def test_mutated_masterdata_is_an_error_with_a_line_or_loads(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("masterdata.yaml").write_text(text, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    result = runner.invoke(app, ["masterdata", "load", "masterdata.yaml", "--db", db])
    if result.exit_code == 1 and not re.match(r"^masterdata\.yaml:\d+: ", (result.stdout + result.stderr).strip()):
        # A valid file that conflicts with what an earlier example loaded: one line, no traceback.
        assert "Traceback" not in result.stdout + result.stderr and result.exception.__class__ is SystemExit
        return
    _answer_is_clean(result, "masterdata.yaml")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Gateway:
    folder = tmp_path_factory.mktemp("orders")
    (folder / "mapping.yaml").write_text(line_mapping(1, 2))
    engine = open_engine(f"sqlite:///{folder / 'ledger.sqlite'}")
    md = load_masterdata(ROOT / MASTERDATA)
    store_masterdata(engine, to_domain(md), md.stock)
    gw = Gateway(load_mapping(folder / "mapping.yaml"), engine)
    gw._restore()  # the state a run starts from; no sources, the writer only queues
    return gw


ORDER_VALUES = st.one_of(
    st.text(max_size=100), st.integers(), st.floats(), st.booleans(), st.none(), st.binary(max_size=20),
    st.lists(st.integers(), max_size=3), st.sampled_from(["1000123", "1000125", " 1000123 ", "", "\x00", "9" * 65]))


@settings(max_examples=200, deadline=None)
@given(value=ORDER_VALUES, quality=st.sampled_from(list(Quality)))
def test_any_order_tag_value_is_taken_or_reported(gateway, value, quality):
    machine = gateway.machines["PRESS-01"]
    now = datetime.now(UTC)
    counted = machine.counted_units
    gateway.on_batch([TagValue("PRESS-01", ORDER_ROLE, value, now, quality, now)])
    # The order tag never changes what was counted; an unusable value leaves the order as it was.
    assert machine.counted_units == counted
    assert isinstance(machine.order, str) and len(machine.order) <= 64 and machine.order.isprintable()
