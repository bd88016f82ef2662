"""Reading YAML input files: error records, locating, plain wording, and no tracebacks.

The loaders' behaviour per file is pinned by the case folders in tests/mappings and
tests/masterdata; this module pins the shared machinery and throws malformed input of
every kind at both loaders: they must load or raise InputFileError whose every line is
``file:line: ...`` — never any other exception.
"""

from __future__ import annotations

import io
import re
import types
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Discriminator
from ruamel.yaml import YAML

from gateway.inputfile.errors import FileError, InputFileError
from gateway.inputfile.messages import unknown
from gateway.inputfile.read import read_yaml
from gateway.mapping.load import load_mapping
from gateway.mapping.model import Mapping
from gateway.mapping.validate import validate_mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.masterdata.model import MasterData

REPO = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^[^:]+:\d+: ")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test writes its files in its own folder and names them relatively."""
    monkeypatch.chdir(tmp_path)


def write(text: str | bytes, name: str = "input.yaml") -> Path:
    path = Path(name)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --- records ------------------------------------------------------------------------


def test_file_error_reads_like_a_compiler_message() -> None:
    error = FileError(
        "mappings/plant.yaml",
        14,
        "machines.PRESS-01.counters.good.type",
        "'unit32' is not one of uint16, uint32, uint64",
    )
    assert str(error) == (
        "mappings/plant.yaml:14: machines.PRESS-01.counters.good.type: 'unit32' is not one of uint16, uint32, uint64"
    )
    assert str(FileError("a.yaml", 1, "", "the file is empty")) == "a.yaml:1: the file is empty"


def test_a_message_never_spans_lines() -> None:
    assert str(FileError("a.yaml", 3, "x", "one\ntwo")) == "a.yaml:3: x: one two"


def test_input_file_error_lists_every_problem() -> None:
    errors = [FileError("a.yaml", 1, "", "first"), FileError("a.yaml", 7, "k", "second")]
    exc = InputFileError(errors)
    assert exc.errors == errors
    assert str(exc) == "a.yaml:1: first\na.yaml:7: k: second"
    assert exc.lines() == ["a.yaml:1: first", "a.yaml:7: k: second"]


def test_unknown_lists_what_is_defined() -> None:
    assert unknown("source", "line-3", {"line-2", "line-1"}) == "unknown source 'line-3' (defined: line-1, line-2)"
    assert unknown("BOM", "X", []) == "unknown BOM 'X' (none defined)"
    many = unknown("material", "X", [f"M{i:02}" for i in range(30)])
    assert many.endswith("M09, ...)")


# --- reading and locating -----------------------------------------------------------


def test_lines_follow_the_file() -> None:
    doc, errors = read_yaml(write("a:\n  b:\n    - x\n    - {c: 1}\n  d: |\n    text\n"))
    assert errors == [] and doc is not None
    assert doc.line(("a",)) == 1
    assert doc.line(("a", "b")) == 2
    assert doc.line(("a", "b", 1, "c")) == 4
    assert doc.line(("a", "d")) == 5
    assert doc.line(("a", "b", 1, "missing")) == 4  # a missing key is where its parent is
    assert doc.error(("a", "b", 1, "c"), "m").path == "a.b[1].c"


def test_numbers_with_leading_zeros_are_kept_as_written() -> None:
    doc, _ = read_yaml(write("op: 0010\norder: 0001234\nn: 10\nzero: 0\nhex: 0x1F\n"))
    assert doc is not None
    assert doc.data == {"op": "0010", "order": "0001234", "n": 10, "zero": 0, "hex": 31}


def test_all_duplicate_keys_are_reported_with_both_lines() -> None:
    doc, errors = read_yaml(write("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n"))
    assert [str(e) for e in errors] == [
        "input.yaml:4: b: duplicate key 'c' (first at line 3)",
        "input.yaml:5: duplicate key 'a' (first at line 1)",
    ]


def test_an_alias_cycle_is_an_error() -> None:
    doc, errors = read_yaml(write("a: &x\n  - 1\n  - *x\n"))
    assert doc is None
    assert [str(e) for e in errors] == ["input.yaml:1: a[1]: an alias (*name) refers to a value that contains it"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "input.yaml:1: the file is empty; expected the keys masterdata, sources, machines, pki, application_uri, outputs"),
        (b"a: b: c\n", "input.yaml:1: YAML syntax: mapping values are not allowed here"),
        (
            b"sources: {}\nmachines:\n\tX: 1\n",
            "input.yaml:3: YAML syntax: found character '\\t' that cannot start any token"
            " (while scanning for the next token)",
        ),
        (b"x: \xff\n", "input.yaml:1: not UTF-8 text (byte 0xff); save the file as UTF-8"),
        (b"x: 1\n\x00\n", "input.yaml:2: character U+0000 is not allowed in YAML"),
        (b"x: " + b"[" * 3000 + b"]" * 3000, "input.yaml:1: nested too deeply to read"),
        (b"a: 1\nx: " + b"7" * 5000 + b"\n", "input.yaml:2: a number with thousands of digits cannot be read"),
    ],
    ids=["empty", "syntax", "tab", "not-utf8", "nul", "deep", "huge-int"],
)
def test_unreadable_files(raw: bytes, expected: str) -> None:
    with pytest.raises(InputFileError) as refused:
        load_mapping(write(raw))
    assert str(refused.value).splitlines()[0] == expected


def test_a_utf8_bom_is_fine() -> None:
    assert load_mapping(write("\ufeffsources: {}\nmachines: {}\n")).machines == {}


# --- pydantic errors in plain words ------------------------------------------------

MACHINE = """\
sources:
  s: {opcua: {endpoint: "opc.tcp://h:4840"}}
machines:
  M:
    source: s
    work_center: W
    counters: {good: {node: n}}
    order: "1"
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("    units_per_cycle: abc\n", "machines.M.units_per_cycle: expected a whole number, got 'abc'"),
        ("    units_per_cycle: 1.5\n", "machines.M.units_per_cycle: expected a whole number, got 1.5"),
        ("    units_per_cycle: 0\n", "machines.M.units_per_cycle: must be at least 1, got 0"),
        ("    units_per_cycle: 100001\n", "machines.M.units_per_cycle: must be at most 100000, got 100001"),
        ("    confirm: {every_seconds: soon}\n", "machines.M.confirm.every_seconds: expected a number, got 'soon'"),
        ("    confirm: [1, 2]\n", "machines.M.confirm: expected a mapping, got a list"),
        ("    operation: ''\n", "machines.M.operation: must not be empty"),
        ("    operation: [a]\n", "machines.M.operation: expected text, got a list"),
        ("    operation: 12.5\n", "machines.M.operation: expected text, got 12.5 (write it in quotes to make it text)"),
        (
            "    colour: red\n",
            "machines.M: unknown key 'colour' (allowed: source, work_center, operation, "
            "units_per_cycle, counters, order, confirm, plausibility, count_when, job_counters, serial, product, version, "
            "line)",
        ),
    ],
)
def test_schema_messages(change: str, expected: str) -> None:
    with pytest.raises(InputFileError) as refused:
        load_mapping(write(MACHINE + change))
    assert str(refused.value) == f"input.yaml:9: {expected}"


def test_a_missing_key_is_reported_at_its_parent() -> None:
    text = MACHINE.replace("    counters: {good: {node: n}}\n", "")
    with pytest.raises(InputFileError) as refused:
        load_mapping(write(text))
    assert refused.value.lines() == ["input.yaml:4: machines.M: missing required key 'counters'"]


def test_keys_pulled_in_by_a_merge_point_at_the_merging_mapping() -> None:
    text = MACHINE.replace("  M:\n", "  M: &m\n") + "    units_per_cycle: x\n  N:\n    <<: *m\n"
    with pytest.raises(InputFileError) as refused:
        load_mapping(write(text))
    file = "input.yaml"
    assert refused.value.lines() == [
        f"{file}:9: machines.M.units_per_cycle: expected a whole number, got 'x'",
        f"{file}:10: machines.N.units_per_cycle: expected a whole number, got 'x'",
    ]


def _unions(annotation: object, seen: set) -> list[tuple[object, bool]]:
    """Every union of two or more members reachable from ``annotation``, and whether it is discriminated."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        inner = args[0]
        if get_origin(inner) in (Union, types.UnionType):
            members = [a for a in get_args(inner) if a is not type(None)]
            found = [(inner, any(isinstance(m, Discriminator) for m in args[1:]))] if len(members) > 1 else []
            return found + [u for m in members for u in _unions(m, seen)]
        return _unions(inner, seen)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return [(annotation, False)] * (len(members) > 1) + [u for m in members for u in _unions(m, seen)]
    if origin in (dict, list, tuple):
        return [u for a in args for u in _unions(a, seen)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        seen.add(annotation)
        return [u for f in annotation.model_fields.values()
                for u in _unions(Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation, seen)]
    return []


@pytest.mark.parametrize("schema", [Mapping, MasterData], ids=lambda m: m.__name__)
def test_every_union_of_an_input_file_is_discriminated(schema: type[BaseModel]) -> None:
    """A smart union reports every member's errors for one value; a discriminated one only
    the member the value was written as, which is what the messages name."""
    unions = _unions(schema, set())
    assert schema is not Mapping or len(unions) >= 5, "the walk finds the tag unions and Machine.order"
    assert [u for u, discriminated in unions if not discriminated] == []


# --- never a traceback --------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SYNTAX = [
    "\n", "  ", "    ", "\t", "- ", ": ", ":", "{", "}", "[", "]", ",", "'", '"', "#", "&a ", "*a", "<<: *a",
    "? ", "---", "...", "!!int ", "!!str ", "!tag ", "|", ">", "~", "null", "true", "1e999", "-1", "0010",
    "0x1F", ".inf", "12.5", "9" * 50, "\u00e9", "\u2028", "\\", "%YAML 1.1",
]  # fmt: skip
TOP_KEYS = ["masterdata", "sources", "machines", "materials", "work_centers", "boms", "routings", "orders", "stock"]
KEYS = TOP_KEYS + [
    "items", "operations", "counters", "good", "scrap", "node", "type", "uint32", "unit32", "opcua",
    "endpoint", "opc.tcp://h", "source", "work_center", "order", "operation", "quantity", "material",
    "base_quantity", "final", "lot",
]  # fmt: skip
TOKENS = SYNTAX + KEYS


def assert_refused_cleanly(path: Path) -> None:
    for loader in (load_mapping, load_masterdata):
        try:
            loaded = loader(path)
        except InputFileError as exc:
            assert exc.errors, "an InputFileError must say why"
            for line in str(exc).splitlines():
                assert LINE.match(line), line
        else:
            if loader is load_masterdata:
                to_domain(loaded)  # whatever loads must also snapshot


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    assert_refused_cleanly(write(raw))


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    assert_refused_cleanly(write(text))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map("".join))
def test_yaml_like_text(text: str) -> None:
    assert_refused_cleanly(write(text))


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["0010", "uint32", "unit32", "opc.tcp://h", "allowed", "manual", "WC-PRESS", "STEEL-COIL"])
)
keys = st.sampled_from(KEYS) | st.text(max_size=8) | st.integers()
structures = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=40
)


def dump(data: object) -> str:
    out = io.StringIO()
    YAML().dump(data, out)
    return out.getvalue()


@FUZZ
@given(st.dictionaries(st.sampled_from(TOP_KEYS) | keys, structures, max_size=6))
def test_random_structures(data: dict) -> None:
    assert_refused_cleanly(write(dump(data)))


def demo(name: str) -> object:
    return YAML(typ="safe").load((REPO / "mappings" / name).read_text(encoding="utf-8"))


def paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a parsed document, to mutate one."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, prefix + (i,))
    return found


def mutate(node: object, where: tuple, value: object) -> object:
    if not where:
        return value
    head, rest = where[0], where[1:]
    if isinstance(node, dict):
        return {**node, head: mutate(node[head], rest, value)}
    copy = list(node)  # type: ignore[call-overload]
    copy[head] = mutate(copy[head], rest, value)
    return copy


@settings(FUZZ, max_examples=80)  # each example validates a whole demo file (~0.15 s): 80 keep CI in bounds
@given(st.sampled_from(["demo-plant.yaml", "demo-masterdata.yaml"]), st.data())
def test_demo_files_with_one_value_changed(name: str, data: st.DataObject) -> None:
    original = demo(name)
    where = data.draw(st.sampled_from(paths(original)))
    changed = mutate(original, where, data.draw(structures))
    path = write(dump(changed), name)
    if name == "demo-plant.yaml":
        write((REPO / "mappings" / "demo-masterdata.yaml").read_bytes(), "demo-masterdata.yaml")
    assert_refused_cleanly(path)
    for error in validate_mapping(path):
        assert LINE.match(str(error)), str(error)
