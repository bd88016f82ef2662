"""The simulator's own Modbus register codec: values to registers (and back), with ``struct``.

For: every simulator that serves Modbus registers (``simulators.modbus_plc``,
``simulators.from_mapping``) and the tests that pin this codec and the gateway's against
the same golden register vectors (``tests/sources/modbus_golden.yaml``).

It must never import gateway code, above all not ``gateway.sources.modbus.registers``: the
simulator is what the gateway's Modbus tests read, and a word- or byte-order mistake in a
codec shared by both sides would be written and read back the same way, so every test would
pass against a device that no real PLC is. Two codecs written differently, each held to
register words taken from device documentation, can only agree by both being right.

How the orders are made here (on purpose not the way the gateway does it): a number is
packed whole with ``struct``, most significant byte first unless the words are swapped,
and the bytes are then cut into registers read big-endian unless exactly one of word and
byte order is little. For the uint32 0x11223344:

====================  ======================  ==========  ================
word / byte order     packed                  registers   usual name
====================  ======================  ==========  ================
big / big             >I 11 22 33 44 → >HH    1122 3344   ABCD
little / big          <I 44 33 22 11 → <HH    3344 1122   CDAB
big / little          >I 11 22 33 44 → <HH    2211 4433   BADC
little / little       <I 44 33 22 11 → >HH    4433 2211   DCBA
====================  ======================  ==========  ================

Strings are ASCII, two characters a register in address order (word order does not apply),
the first in the high byte with byte order big, in the low byte with little; NUL-padded.
Pure: no I/O; a value that does not fit is a ``ValueError``, never a clipped number.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ORDERS", "TYPES", "RegisterTag", "decode", "encode", "registers_of"]

# type → struct format character; the register count follows from its size.
_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
            "float32": "f", "float64": "d"}
TYPES = (*_FORMATS, "string", "bool")
ORDERS = ("big", "little")
_END = {"big": ">", "little": "<"}


def registers_of(type_: str, length: int | None = None) -> int:
    """How many registers (or bits) a value of ``type_`` occupies; a string's ``length`` is its own."""
    if type_ == "string":
        if length is None or length < 1:
            raise ValueError("a string needs a length of at least one register")
        return length
    if type_ == "bool":
        return 1
    if type_ not in _FORMATS:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, got {type_!r}")
    return struct.calcsize(_FORMATS[type_]) // 2


def _ends(word_order: str, byte_order: str) -> tuple[str, str]:
    """(how the number is packed, how its bytes are read as registers)."""
    if word_order not in ORDERS or byte_order not in ORDERS:
        raise ValueError(f"word_order and byte_order are 'big' or 'little', got {word_order!r}, {byte_order!r}")
    return _END[word_order], _END["big" if word_order == byte_order else "little"]


def encode(type_: str, value: object, *, length: int | None = None, word_order: str = "big",
           byte_order: str = "big") -> list[int] | list[bool]:
    """The registers (or the one bit, for ``bool``) that show ``value`` as ``type_`` in these orders."""
    count = registers_of(type_, length)
    if type_ == "bool":
        return [bool(value)]
    if type_ == "string":
        _ends("big", byte_order)  # validates byte_order; strings have no word order
        text = str(value)
        if not text.isascii() or len(text) > 2 * count:
            raise ValueError(f"{text!r} is not ASCII text of at most {2 * count} characters")
        return list(struct.unpack(f"{_END[byte_order]}{count}H", text.encode("ascii").ljust(2 * count, b"\0")))
    pack, read = _ends(word_order, byte_order)
    try:
        data = struct.pack(pack + _FORMATS[type_], value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit a {type_}: {exc}") from None
    return list(struct.unpack(f"{read}{count}H", data))


def decode(type_: str, registers: Sequence[int] | Sequence[bool], *, length: int | None = None,
           word_order: str = "big", byte_order: str = "big") -> int | float | str | bool:
    """The value ``registers`` show as ``type_`` in these orders (the inverse of ``encode``).

    A string ends at its first NUL and loses trailing blanks, as controllers pad either way.
    """
    count = registers_of(type_, length)
    if len(registers) != count:
        raise ValueError(f"a {type_} is {count} registers, got {len(registers)}")
    if type_ == "bool":
        return bool(registers[0])
    if type_ == "string":
        _ends("big", byte_order)
        raw = struct.pack(f"{_END[byte_order]}{count}H", *registers).split(b"\0", 1)[0]
        return raw.decode("ascii").rstrip(" ")
    pack, read = _ends(word_order, byte_order)
    return struct.unpack(pack + _FORMATS[type_], struct.pack(f"{read}{count}H", *registers))[0]


@dataclass(frozen=True, slots=True)
class RegisterTag:
    """One value on a simulated unit: where its registers are and how they show it.

    ``register`` is the 0-based address of the first register (or bit) in ``table``;
    ``length`` is a string's register count and given for strings only.
    """

    machine: str
    role: str
    register: int
    type: str
    table: str = "holding"
    length: int | None = None
    word_order: str = "big"
    byte_order: str = "big"

    def __post_init__(self) -> None:
        if (self.type == "string") != (self.length is not None):
            raise ValueError(f"{self.machine} {self.role}: a length is given for strings, and for strings only")
        registers_of(self.type, self.length)
        _ends(self.word_order, self.byte_order)

    @property
    def count(self) -> int:
        return registers_of(self.type, self.length)

    @property
    def last(self) -> int:
        return self.register + self.count - 1

    def encode(self, value: object) -> list[int] | list[bool]:
        return encode(self.type, value, length=self.length, word_order=self.word_order, byte_order=self.byte_order)

    def decode(self, registers: Sequence[int] | Sequence[bool]) -> int | float | str | bool:
        return decode(self.type, registers, length=self.length, word_order=self.word_order,
                      byte_order=self.byte_order)
