"""The Modbus register codec and read grouping, against register patterns written by hand.

``PATTERNS`` is the reference: for each type a value and the registers a device shows
for it in each word/byte order, worked out from the value's bytes, not from the codec.
The socket tests reuse it, so the same table pins what travels over the wire. Which
requests a mapping's tags become is pinned by the cases in ``modbus_plans/``
(``test_modbus_plans.py``); what no mapping can write (bit tables, overlapping tags,
tags given in any order) is tested here.
"""

from __future__ import annotations

import math

import pytest

from gateway.sources.modbus.registers import (
    MAX_BITS_PER_READ,
    DecodeError,
    ModbusTag,
    decode,
    encode,
    one_read_per_tag,
    plan_reads,
)

ORDERS = [("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")]

# type → (value, {(word_order, byte_order): registers}). Bytes of each value, most
# significant first, are named in the comment; "little" swaps words or bytes.
PATTERNS: dict[str, tuple[object, dict[tuple[str, str], list[int]]]] = {
    # -2 = FF FE
    "int16": (-2, {("big", "big"): [0xFFFE], ("little", "big"): [0xFFFE],
                   ("big", "little"): [0xFEFF], ("little", "little"): [0xFEFF]}),
    # 0x1234 = 12 34
    "uint16": (0x1234, {("big", "big"): [0x1234], ("little", "big"): [0x1234],
                        ("big", "little"): [0x3412], ("little", "little"): [0x3412]}),
    # -0x01020304 = FE FD FC FC
    "int32": (-0x01020304, {("big", "big"): [0xFEFD, 0xFCFC], ("little", "big"): [0xFCFC, 0xFEFD],
                            ("big", "little"): [0xFDFE, 0xFCFC], ("little", "little"): [0xFCFC, 0xFDFE]}),
    # 0x11223344 = 11 22 33 44
    "uint32": (0x11223344, {("big", "big"): [0x1122, 0x3344], ("little", "big"): [0x3344, 0x1122],
                            ("big", "little"): [0x2211, 0x4433], ("little", "little"): [0x4433, 0x2211]}),
    # -0x0102030405060708 = FE FD FC FB FA F9 F8 F8
    "int64": (-0x0102030405060708, {
        ("big", "big"): [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8], ("little", "big"): [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD],
        ("big", "little"): [0xFDFE, 0xFBFC, 0xF9FA, 0xF8F8], ("little", "little"): [0xF8F8, 0xF9FA, 0xFBFC, 0xFDFE]}),
    # 0xFEDCBA9876543210 = FE DC BA 98 76 54 32 10
    "uint64": (0xFEDCBA9876543210, {
        ("big", "big"): [0xFEDC, 0xBA98, 0x7654, 0x3210], ("little", "big"): [0x3210, 0x7654, 0xBA98, 0xFEDC],
        ("big", "little"): [0xDCFE, 0x98BA, 0x5476, 0x1032], ("little", "little"): [0x1032, 0x5476, 0x98BA, 0xDCFE]}),
    # float32(pi) = 40 49 0F DB
    "float32": (3.1415927410125732, {("big", "big"): [0x4049, 0x0FDB], ("little", "big"): [0x0FDB, 0x4049],
                                     ("big", "little"): [0x4940, 0xDB0F], ("little", "little"): [0xDB0F, 0x4940]}),
    # float64(pi) = 40 09 21 FB 54 44 2D 18
    "float64": (math.pi, {
        ("big", "big"): [0x4009, 0x21FB, 0x5444, 0x2D18], ("little", "big"): [0x2D18, 0x5444, 0x21FB, 0x4009],
        ("big", "little"): [0x0940, 0xFB21, 0x4454, 0x182D], ("little", "little"): [0x182D, 0x4454, 0xFB21, 0x0940]}),
}
# "1000125" = 31 30 30 30 31 32 35, NUL-padded to 5 registers.
STRING = ("1000125", {"big": [0x3130, 0x3030, 0x3132, 0x3500, 0x0000],
                      "little": [0x3031, 0x3030, 0x3231, 0x0035, 0x0000]})


def tag(register: int = 100, type: str = "uint32", **kw: object) -> ModbusTag:
    return ModbusTag("M1", kw.pop("role", "good"), register, type, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("type_", list(PATTERNS))
@pytest.mark.parametrize(("word_order", "byte_order"), ORDERS)
def test_every_number_type_in_every_order(type_: str, word_order: str, byte_order: str) -> None:
    value, registers = PATTERNS[type_]
    t = tag(type=type_, word_order=word_order, byte_order=byte_order)
    assert decode(t, registers[(word_order, byte_order)]) == value
    assert encode(t, value) == registers[(word_order, byte_order)]


@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_strings_are_read_in_address_order_with_either_byte_order(byte_order: str) -> None:
    text, registers = STRING
    t = tag(type="string", length=5, byte_order=byte_order, role="order")
    assert decode(t, registers[byte_order]) == text
    assert encode(t, text) == registers[byte_order]


def test_strings_end_at_the_first_nul_and_lose_trailing_blanks() -> None:
    t = tag(type="string", length=4, role="order")
    assert decode(t, [0x4142, 0x2020, 0x2020, 0x2020]) == "AB"  # space-padded
    assert decode(t, [0x4142, 0x0043, 0x4444, 0x4444]) == "AB"  # C string: what follows the NUL is junk
    assert decode(t, [0, 0, 0, 0]) == ""


def test_a_string_that_is_not_ascii_is_an_error_not_a_value() -> None:
    with pytest.raises(DecodeError, match=r"not ASCII text \(31 c3 a9\).*byte_order"):
        decode(tag(type="string", length=2, role="order"), [0x31C3, 0xA900])


def test_unsigned_counters_decode_to_their_full_range() -> None:
    assert decode(tag(type="uint16"), [0xFFFF]) == 65535
    assert decode(tag(type="uint32"), [0xFFFF, 0xFFFF]) == 2**32 - 1
    assert decode(tag(type="uint64"), [0xFFFF] * 4) == 2**64 - 1


def test_bits_are_bools() -> None:
    assert decode(tag(7, "bool", table="coil"), [True]) is True
    assert encode(tag(7, "bool", table="discrete_input"), 0) == [False]


def test_a_read_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(DecodeError, match="expected 2 values, got 1"):
        decode(tag(), [1])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"type": "uint24"}, "type must be one of"),
        ({"type": "bool"}, "bool is the type of coils"),
        ({"type": "uint16", "table": "coil"}, "bool is the type of coils"),
        ({"type": "string"}, "a string needs a length"),
        ({"type": "uint16", "length": 2}, "a string needs a length"),
        ({"word_order": "middle"}, "'big' or 'little'"),
        ({"register": 65535}, "within addresses 0..65535"),
        ({"table": "holdings"}, "table must be one of"),
    ],
)
def test_a_tag_that_cannot_exist_is_refused(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tag(**kw)


def test_value_that_does_not_fit_its_type_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(tag(type="uint16"), 70000)
    with pytest.raises(ValueError, match="needs more than 1 registers"):
        encode(tag(type="string", length=1, role="order"), "ABC")


# --- grouping -------------------------------------------------------------------------


def spans(reads) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in reads]


def test_an_overlapping_tag_at_the_cap_starts_the_next_read() -> None:
    # Only shared order tags overlap in a mapping; the planner takes any tags (the workbench's, the bench's).
    tags = [tag(0, role="a"), tag(123, role="b"), tag(124, role="c")]  # 0..1, 123..124, 124..125
    assert spans(plan_reads(tags, max_gap=124)) == [("holding", 0, 125), ("holding", 124, 2)]


def test_bit_tables_bridge_sixteen_bits_per_register_of_gap() -> None:
    # Coils and discrete inputs cannot be written in a mapping (yet): their plans are pinned here.
    running, alarm = tag(3, "bool", table="coil", role="running"), tag(131, "bool", table="coil", role="alarm")
    assert spans(plan_reads([running, alarm], max_gap=8)) == [("coil", 3, 129)]  # 127 bits apart: within 8 registers
    late = tag(133, "bool", table="coil", role="alarm")  # 129 bits apart: one more than 8 registers' worth
    assert spans(plan_reads([running, late], max_gap=8)) == [("coil", 3, 1), ("coil", 133, 1)]


def test_bit_reads_stop_at_2000_bits() -> None:
    tags = [tag(i * 100, "bool", table="discrete_input", role=f"b{i}") for i in range(40)]
    reads = plan_reads(tags, max_gap=8)  # 100 bits apart: bridged
    assert all(r.count <= MAX_BITS_PER_READ for r in reads)
    assert spans(reads)[:2] == [("discrete_input", 0, 1901), ("discrete_input", 2000, 1901)]


def test_the_plan_covers_every_tag_in_address_order_whatever_the_input_order() -> None:
    tags = [tag(400 - 4 * i, role=f"t{i}") for i in range(60)]  # 164..400, given backwards
    reads = plan_reads(tags, max_gap=2)
    assert sorted(t.role for r in reads for t in r.tags) == sorted(t.role for t in tags)
    for r in reads:
        assert r.count <= 125
        assert all(r.start <= t.register and t.last <= r.last for t in r.tags)
        assert [t.register for t in r.tags] == sorted(t.register for t in r.tags)
    assert len(reads) == 2  # 164..401 is 238 registers: two reads of at most 125


def test_values_of_a_read_come_from_each_tags_own_registers() -> None:
    good, order = tag(100), ModbusTag("M1", "order", 104, "string", length=2)
    (read,) = plan_reads([good, order], max_gap=8)
    words = [0x0001, 0x0002, 0xDEAD, 0xBEEF, 0x3132, 0x3300]
    assert read.values(words) == [(good, 0x00010002), (order, "123")]
    assert isinstance(read.values([0, 1, 0, 0, 0xFFFF, 0])[1][1], DecodeError)


def test_without_grouping_every_tag_is_a_read_of_its_own() -> None:
    tags = [tag(100), tag(102, role="scrap")]
    assert spans(one_read_per_tag(tags)) == [("holding", 100, 2), ("holding", 102, 2)]


def test_a_tag_wider_than_a_read_is_refused() -> None:
    with pytest.raises(ValueError, match="wider than one read"):
        plan_reads([ModbusTag("M1", "order", 0, "string", length=100)], max_count=64)
