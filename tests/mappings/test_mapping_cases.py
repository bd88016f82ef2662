"""Data-driven mapping cases: one folder per behaviour or reported bug.

Each folder holds ``mapping.yaml`` (and, when the case is about references, the
``masterdata.yaml`` it names, or the certificates it names) plus either ``expected.err`` —
the exact error lines, file names as the user typed them, since the case runs inside its
folder — or ``expected.json``, a small summary of what loaded; and ``expected.warn`` when
``gateway validate`` warns. ``environment.json``, if there, sets environment variables for
the case (``null`` unsets one). Adding a case is adding a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.inputfile.errors import InputFileError
from gateway.mapping.load import load_mapping, read_mapping
from gateway.mapping.model import CounterTag, Mapping, ModbusCounterTag, ModbusOrderTag, OrderTag, SourceConfig
from gateway.mapping.validate import validate_mapping
from gateway.masterdata.load import load_masterdata, to_domain

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CASES = sorted(p for p in HERE.iterdir() if (p / "mapping.yaml").is_file())


def summary(mapping: Mapping) -> dict:
    """What a case's expected.json pins: per machine its wiring, not every default."""
    return {
        "sources": {name: _source(s) for name, s in mapping.sources.items()},
        "machines": {
            name: {
                "source": m.source,
                "work_center": m.work_center,
                "operation": m.operation,
                "units_per_cycle": m.units_per_cycle,
                "order": _order(m.order),
                "counters": {c: _counter(t) for c, t in m.counters if t},
                "confirm": [m.confirm.every_units, m.confirm.every_seconds],
            } | ({"serial": _order(m.serial)} if m.serial is not None else {})
            for name, m in mapping.machines.items()
        },
    }


def _source(source: SourceConfig) -> object:
    if source.opcua is not None:
        ua = source.opcua
        if ua.security is None and ua.server_certificate is None:
            return ua.endpoint  # as the older cases were written
        security = f"{ua.security.policy}/{ua.security.mode}" if ua.security else None
        return {"endpoint": ua.endpoint, "security": security, "server_certificate": ua.server_certificate}
    return source.modbus.model_dump(exclude={"reconnect_min_s", "reconnect_max_s"})


def _counter(tag: CounterTag | ModbusCounterTag) -> object:
    # An OPC UA counter is pinned by its type alone, as the older cases were written.
    return tag.type if isinstance(tag, CounterTag) else tag.model_dump(exclude_none=True)


def _order(order: object) -> object:
    if isinstance(order, OrderTag):
        return {"node": order.node}
    return order.model_dump(exclude_none=True) if isinstance(order, ModbusOrderTag) else order


def expected_lines(case: Path) -> list[str]:
    return (case / "expected.err").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (case / "expected.err").is_file() != (case / "expected.json").is_file(), "one of the two"
    monkeypatch.chdir(case)
    set_environment(case, monkeypatch)
    warnings: list = []
    errors = [str(e) for e in validate_mapping("mapping.yaml", warnings=warnings)]
    # Warnings (not wrong, will not work yet) are pinned by expected.warn; none without it.
    expected_warnings = (case / "expected.warn").read_text(encoding="utf-8").splitlines() \
        if (case / "expected.warn").is_file() else []
    assert [str(w) for w in warnings] == expected_warnings
    if (case / "expected.json").is_file():
        assert errors == []
        assert summary(load_mapping("mapping.yaml")) == json.loads((case / "expected.json").read_text())
        return
    expected = expected_lines(case)
    assert errors == expected
    _load_agrees(expected)


def set_environment(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = case / "environment.json"
    for name, value in (json.loads(file.read_text()) if file.is_file() else {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _load_agrees(expected: list[str]) -> None:
    """load_mapping refuses the file exactly when the file alone has problems."""
    own = [str(e) for e in read_mapping("mapping.yaml").errors]
    assert set(own) <= set(expected)
    if own:
        with pytest.raises(InputFileError) as refused:
            load_mapping("mapping.yaml")
        assert str(refused.value).splitlines() == own
    else:
        load_mapping("mapping.yaml")


def test_relative_file_name_stays_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    with pytest.raises(InputFileError) as refused:
        load_mapping("wrong_counter_type_unit32/mapping.yaml")
    assert str(refused.value) == (
        "wrong_counter_type_unit32/mapping.yaml:11: machines.PRESS-01.counters.good.type: "
        "'unit32' is not one of uint16, uint32, uint64"
    )


def test_masterdata_is_found_next_to_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    errors = [str(e) for e in validate_mapping("masterdata_errors_reported_with_the_mapping/mapping.yaml")]
    assert errors[0].startswith("masterdata_errors_reported_with_the_mapping/masterdata.yaml:20: orders.1000124.quantity: ")


def test_explicit_masterdata_wins_over_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE / "masterdata_file_missing")
    assert validate_mapping("mapping.yaml", masterdata_path="../valid_two_machines_checked_against_masterdata/masterdata.yaml") == []
    errors = [str(e) for e in validate_mapping("mapping.yaml", "nowhere.yaml")]
    assert errors == ["nowhere.yaml:1: cannot read the file: No such file or directory"]


def test_missing_mapping_file_is_an_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    with pytest.raises(InputFileError, match=r"^plant\.yaml:1: cannot read the file: "):
        load_mapping("plant.yaml")


def test_demo_plant_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert validate_mapping("mappings/demo-plant.yaml") == []
    mapping = load_mapping("mappings/demo-plant.yaml")
    domain = to_domain(load_masterdata("mappings/demo-masterdata.yaml"))
    for machine in mapping.machines.values():
        assert machine.work_center in domain.work_centers
        if isinstance(machine.order, str):
            assert domain.orders[machine.order].operation(machine.operation) is not None


def test_certificate_paths_are_relative_to_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    errors = [str(e) for e in validate_mapping("security_files_missing/mapping.yaml")]
    assert errors[0] == ("security_files_missing/mapping.yaml:8: sources.line-1.opcua.certificate: certificate file "
                         "'security_files_missing/certs/gateway.der' does not exist")
    mapping = load_mapping("security_files_missing/mapping.yaml")
    assert mapping.pki == "security_files_missing/plant-pki"
    assert mapping.sources["line-1"].opcua.private_key == "security_files_missing/certs/gateway.pem"
