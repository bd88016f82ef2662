"""Both Modbus codecs against golden register vectors, and against each other.

The gateway decodes what the simulator encodes in every Modbus test, so a word- or
byte-order mistake shared by the two would pass all of them. Here each codec on its own —
the gateway's ``gateway.sources.modbus.registers`` and the simulator's
``simulators.modbus_codec`` — must turn every value of ``modbus_golden.yaml`` into exactly
the register words written there and back, in every order; then random values of every
type and order go from the simulator's encoder through the gateway's decoder unchanged.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from gateway.sources.modbus import registers as gateway_codec
from gateway.sources.modbus.registers import ModbusTag
from simulators import modbus_codec as simulator_codec

GOLDEN = YAML(typ="safe").load(Path(__file__).with_name("modbus_golden.yaml"))
SIMULATORS = Path(simulator_codec.__file__).parent
# The vendors' names (see the file's header) in the codecs' words: (word_order, byte_order).
ORDER_NAMES = {"ABCD": ("big", "big"), "CDAB": ("little", "big"),
               "BADC": ("big", "little"), "DCBA": ("little", "little")}
NUMBER_TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]

NUMBER_CASES = [
    pytest.param(v, name, id=f"{v['type']}-{v['value']}-{name}")
    for v in GOLDEN["numbers"] for name in ORDER_NAMES
]
STRING_CASES = [
    pytest.param(v, byte_order, id=f"{v['value']}-{byte_order}")
    for v in GOLDEN["strings"] for byte_order in ("big", "little")
]


def gateway_tag(type_: str, word_order: str = "big", byte_order: str = "big", length: int | None = None) -> ModbusTag:
    role = "order" if type_ == "string" else "good"
    return ModbusTag("M1", role, 100, type_, length=length, word_order=word_order, byte_order=byte_order)


def test_the_golden_file_covers_every_number_type_in_every_order() -> None:
    assert sorted({v["type"] for v in GOLDEN["numbers"]}) == sorted(NUMBER_TYPES)
    assert all(sorted(v["registers"]) == sorted(ORDER_NAMES) for v in GOLDEN["numbers"])
    assert all(sorted(v["registers"]) == ["big", "little"] for v in GOLDEN["strings"])
    # Both codecs know exactly these types (plus string and bool), so none escapes the vectors.
    assert sorted(gateway_codec.TYPES) == sorted(simulator_codec.TYPES) == sorted([*NUMBER_TYPES, "string", "bool"])
    assert len(NUMBER_CASES) == 36 and len(STRING_CASES) == 4


@pytest.mark.parametrize(("vector", "order"), NUMBER_CASES)
def test_the_gateway_codec_matches_every_golden_number(vector: dict, order: str) -> None:
    word_order, byte_order = ORDER_NAMES[order]
    tag = gateway_tag(vector["type"], word_order, byte_order)
    registers = vector["registers"][order]
    assert gateway_codec.decode(tag, registers) == vector["value"]
    assert gateway_codec.encode(tag, vector["value"]) == registers
    assert gateway_codec.encode(tag, vector.get("written", vector["value"])) == registers


@pytest.mark.parametrize(("vector", "order"), NUMBER_CASES)
def test_the_simulator_codec_matches_every_golden_number(vector: dict, order: str) -> None:
    word_order, byte_order = ORDER_NAMES[order]
    orders = {"word_order": word_order, "byte_order": byte_order}
    registers = vector["registers"][order]
    assert simulator_codec.decode(vector["type"], registers, **orders) == vector["value"]
    assert simulator_codec.encode(vector["type"], vector["value"], **orders) == registers
    assert simulator_codec.encode(vector["type"], vector.get("written", vector["value"]), **orders) == registers


@pytest.mark.parametrize(("vector", "byte_order"), STRING_CASES)
def test_the_gateway_codec_matches_every_golden_string(vector: dict, byte_order: str) -> None:
    tag = gateway_tag("string", byte_order=byte_order, length=vector["length"])
    registers = vector["registers"][byte_order]
    assert gateway_codec.decode(tag, registers) == vector["value"]
    assert gateway_codec.encode(tag, vector["value"]) == registers


@pytest.mark.parametrize(("vector", "byte_order"), STRING_CASES)
def test_the_simulator_codec_matches_every_golden_string(vector: dict, byte_order: str) -> None:
    registers, shape = vector["registers"][byte_order], {"length": vector["length"], "byte_order": byte_order}
    assert simulator_codec.decode("string", registers, **shape) == vector["value"]
    assert simulator_codec.encode("string", vector["value"], **shape) == registers


# --- simulator encodes, gateway decodes --------------------------------------------------

VALUES = {
    "int16": st.integers(-(2**15), 2**15 - 1), "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1), "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1), "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False), "float64": st.floats(allow_nan=False),
}


def _same(a: object, b: object) -> bool:
    # -0.0 == 0.0 would hide a lost sign bit; compare floats by their bits.
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("type_", NUMBER_TYPES)
@pytest.mark.parametrize("order", list(ORDER_NAMES))
def test_what_the_simulator_encodes_the_gateway_decodes_unchanged(type_: str, order: str) -> None:
    word_order, byte_order = ORDER_NAMES[order]
    tag = gateway_tag(type_, word_order, byte_order)

    @given(VALUES[type_])
    def round_trip(value: int | float) -> None:
        registers = simulator_codec.encode(type_, value, word_order=word_order, byte_order=byte_order)
        assert len(registers) == tag.count and all(0 <= r <= 0xFFFF for r in registers)
        assert _same(gateway_codec.decode(tag, registers), value)
        # and the other way, so that neither side is only ever the reader
        back = simulator_codec.decode(type_, gateway_codec.encode(tag, value), word_order=word_order,
                                      byte_order=byte_order)
        assert _same(back, value)

    round_trip()


TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@pytest.mark.parametrize("byte_order", ["big", "little"])
@given(text=TEXT, spare=st.integers(0, 3))
def test_strings_the_simulator_encodes_the_gateway_decodes(byte_order: str, text: str, spare: int) -> None:
    length = max(1, (len(text) + 1) // 2 + spare)
    registers = simulator_codec.encode("string", text, length=length, byte_order=byte_order)
    # Controllers pad with blanks as well as NULs, so trailing blanks are not part of the value.
    tag = gateway_tag("string", byte_order=byte_order, length=length)
    assert gateway_codec.decode(tag, registers) == text.rstrip(" ")
    assert simulator_codec.decode("string", registers, length=length, byte_order=byte_order) == text.rstrip(" ")


@given(bit=st.booleans())
def test_bits_the_simulator_encodes_the_gateway_decodes(bit: bool) -> None:
    tag = ModbusTag("M1", "good", 7, "bool", table="coil")
    assert gateway_codec.decode(tag, simulator_codec.encode("bool", bit)) is bit


# --- the independence itself -------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_simulator_imports_the_gateway_codec() -> None:
    users = sorted(p.name for p in SIMULATORS.glob("*.py")
                   if any(n.startswith("gateway.sources.modbus.registers") for n in _imports(p)))
    assert users == []
    assert not [n for n in _imports(SIMULATORS / "modbus_codec.py") if n.split(".")[0] == "gateway"]
