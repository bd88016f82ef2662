"""The simulator's own Modbus codec: what it refuses, and its tags' shape.

Its values are pinned by the golden register vectors (``tests/sources/test_modbus_golden.py``);
here is what it must not do: clip a number, cut a string, or take an order it does not know.
"""

from __future__ import annotations

import pytest

from simulators.modbus_codec import RegisterTag, decode, encode, registers_of


def test_register_counts_follow_from_the_type() -> None:
    assert [registers_of(t) for t in ("int16", "uint16", "int32", "uint32", "float32", "int64", "uint64",
                                      "float64", "bool")] == [1, 1, 2, 2, 2, 4, 4, 4, 1]
    assert registers_of("string", 10) == 10


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("uint16", 65536, "65536 does not fit a uint16"),
        ("uint32", -1, "-1 does not fit a uint32"),
        ("int16", 32768, "32768 does not fit a int16"),
    ],
)
def test_a_number_that_does_not_fit_is_refused_not_clipped(type_: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(type_, value)


def test_strings_must_be_ascii_and_fit_their_registers() -> None:
    assert encode("string", "ABCD", length=2) == [0x4142, 0x4344]
    with pytest.raises(ValueError, match="'ABCDE' is not ASCII text of at most 4 characters"):
        encode("string", "ABCDE", length=2)
    with pytest.raises(ValueError, match="'é' is not ASCII text of at most 2 characters"):
        encode("string", "é", length=1)
    with pytest.raises(ValueError, match="a string needs a length"):
        encode("string", "A")


def test_decoding_takes_exactly_the_registers_of_the_type() -> None:
    with pytest.raises(ValueError, match="a uint32 is 2 registers, got 1"):
        decode("uint32", [1])
    assert decode("string", [0x4142, 0x2020, 0x0000], length=3) == "AB"  # blanks and NULs pad


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"type": "uint24"}, "type must be one of"),
        ({"word_order": "middle"}, "'big' or 'little'"),
        ({"type": "string"}, "a length is given for strings, and for strings only"),
        ({"length": 2}, "a length is given for strings, and for strings only"),
    ],
)
def test_a_tag_it_cannot_encode_is_refused_when_made(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegisterTag(**{"machine": "M1", "role": "GoodCount", "register": 100, "type": "uint32", **kw})


def test_a_tag_encodes_in_its_own_orders() -> None:
    tag = RegisterTag("M1", "GoodCount", 100, "uint32", word_order="little")
    assert (tag.count, tag.last) == (2, 101)
    assert tag.encode(0x11223344) == [0x3344, 0x1122]
    assert tag.decode([0x3344, 0x1122]) == 0x11223344
