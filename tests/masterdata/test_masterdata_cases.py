"""Data-driven master-data cases: one folder per behaviour or reported bug.

Each folder holds ``masterdata.yaml`` plus either ``expected.err`` (the exact error
lines; the case runs inside its folder, so file names are as typed) or ``expected.json``
(what ``to_domain`` makes of it, quantities as Decimal text so exactness shows: a BOM
quantity of 0.1 must come out as "0.1", never 0.1000000000000000055).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.inputfile.errors import InputFileError
from gateway.masterdata.load import DomainMasterData, load_masterdata, read_masterdata, to_domain

HERE = Path(__file__).parent
CASES = sorted(p for p in HERE.iterdir() if (p / "masterdata.yaml").is_file())


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def summary(domain: DomainMasterData) -> dict:
    return {
        "materials": {
            k: [m.uom, m.decimals, m.lot_tracked, m.negative_stock_allowed, str(m.standard_price), m.currency,
                m.auto_reprocess] + (["serial", m.serial_pattern] if m.serial_tracked else [])
            for k, m in domain.materials.items()
        },
        "work_centers": {k: [w.currency, w.supply_location] for k, w in domain.work_centers.items()},
        "orders": jsonable(domain.orders),
    }


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (case / "expected.err").is_file() != (case / "expected.json").is_file(), "one of the two"
    monkeypatch.chdir(case)
    if (case / "expected.json").is_file():
        domain = to_domain(load_masterdata("masterdata.yaml"))
        assert summary(domain) == json.loads((case / "expected.json").read_text())
        return
    expected = (case / "expected.err").read_text(encoding="utf-8").splitlines()
    assert [str(e) for e in read_masterdata("masterdata.yaml").errors] == expected
    with pytest.raises(InputFileError) as refused:
        load_masterdata("masterdata.yaml")
    assert str(refused.value).splitlines() == expected
