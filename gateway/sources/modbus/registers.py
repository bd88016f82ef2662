"""What a Modbus tag is on the wire: its registers, their decoding, and reads grouped.

For: the Modbus source (decode what a read returned; plan as few reads as possible), the
workbench's register view and the grouping benchmark. The simulator encodes with its own
code (``simulators/modbus_codec.py``), never with this module, and both are tested against
the golden register vectors in ``tests/sources/modbus_golden.yaml``: a word- or byte-order
mistake here cannot be mirrored on the other side and hide.

Word and byte order, for the uint32 0x11223344 (bytes A=11 B=22 C=33 D=44):

=====================  ==================  ================
word_order/byte_order  registers (n, n+1)  usual name
=====================  ==================  ================
big / big              0x1122, 0x3344      ABCD (the spec)
little / big           0x3344, 0x1122      CDAB (word swap)
big / little           0x2211, 0x4433      BADC (byte swap)
little / little        0x4433, 0x2211      DCBA
=====================  ==================  ================

Strings are packed two characters per register in address order; ``byte_order`` says
whether a register's high byte (big) or low byte (little) holds the first character.

Grouping: per table, tags sorted by address are read together while the next tag starts
at most ``max_gap`` unused registers after the read so far and the read stays within
``max_count`` registers (125 is the protocol's limit for one request). Tags that share
registers (one order tag for several machines) are read once.

Pure: no I/O, no clock, no pymodbus. It must never guess: a tag it cannot decode is a
``DecodeError``, not a made-up value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.mapping.model import LAST_ADDRESS, MAX_REGISTERS_PER_READ, MODBUS_TYPE_REGISTERS

__all__ = [
    "BIT_TABLES",
    "DecodeError",
    "MAX_BITS_PER_READ",
    "ModbusTag",
    "Read",
    "decode",
    "encode",
    "one_read_per_tag",
    "plan_reads",
]

Table = Literal["holding", "input", "coil", "discrete_input"]
TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete_input")
BIT_TABLES = frozenset({"coil", "discrete_input"})
# One read of coils or discrete inputs carries at most 2000 bits (spec 6.1, 6.2).
MAX_BITS_PER_READ = 2000
# A gap of one register costs two bytes on the wire; a gap of sixteen bits costs the same.
BITS_PER_REGISTER = 16

_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
            "float32": "f", "float64": "d"}
TYPES = (*_FORMATS, "string", "bool")
ORDERS = ("big", "little")


class DecodeError(ValueError):
    """The registers do not hold a value of the tag's type (e.g. a string that is not ASCII)."""


@dataclass(frozen=True, slots=True)
class ModbusTag:
    """One value on a Modbus unit: where it is and how it is encoded.

    ``register`` is the 0-based address of its first register (or bit); ``length`` is the
    number of registers of a ``string`` and is not given for other types. ``bool`` is
    the type of a coil or discrete input, and only of those.
    """

    machine: str
    role: str
    register: int
    type: str
    table: Table = "holding"
    length: int | None = None
    word_order: str = "big"
    byte_order: str = "big"

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"{self.address}: table must be one of {', '.join(TABLES)}")
        if self.type not in TYPES:
            raise ValueError(f"{self.address}: type must be one of {', '.join(TYPES)}")
        if (self.type == "bool") != (self.table in BIT_TABLES):
            raise ValueError(f"{self.address}: bool is the type of coils and discrete inputs, and theirs only")
        if (self.type == "string") != (self.length is not None) or (self.length is not None and self.length < 1):
            raise ValueError(f"{self.address}: a string needs a length of at least one register; other types none")
        if self.word_order not in ORDERS or self.byte_order not in ORDERS:
            raise ValueError(f"{self.address}: word_order and byte_order are 'big' or 'little'")
        if not 0 <= self.register <= self.last <= LAST_ADDRESS:
            raise ValueError(f"{self.address}: must lie within addresses 0..{LAST_ADDRESS}")

    @property
    def count(self) -> int:
        """Registers (or bits, in a bit table) the tag occupies."""
        if self.length is not None:
            return self.length
        return MODBUS_TYPE_REGISTERS.get(self.type, 1)  # 1: a bit (and whatever __post_init__ refuses)

    @property
    def last(self) -> int:
        return self.register + self.count - 1

    @property
    def address(self) -> str:
        """For people: ``holding 100..101 uint32`` (+ the orders when not big)."""
        where = f"{self.register}" if self.count == 1 else f"{self.register}..{self.register + self.count - 1}"
        orders = "".join(f" {kind}_order={value}" for kind, value in
                         (("word", self.word_order), ("byte", self.byte_order)) if value != "big")
        return f"{self.table} {where} {self.type}{orders}"


# --- codec ----------------------------------------------------------------------------


def _bytes(registers: Sequence[int], word_order: str, byte_order: str) -> bytes:
    words = registers if word_order == "big" else list(reversed(registers))
    return b"".join(int(w).to_bytes(2, "big" if byte_order == "big" else "little") for w in words)


def _registers(data: bytes, word_order: str, byte_order: str) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], "big" if byte_order == "big" else "little")
             for i in range(0, len(data), 2)]
    return words if word_order == "big" else list(reversed(words))


def decode(tag: ModbusTag, words: Sequence[int] | Sequence[bool]) -> int | float | str | bool:
    """The value of ``tag`` from exactly its registers (or its bit)."""
    if len(words) != tag.count:
        raise DecodeError(f"{tag.address}: expected {tag.count} values, got {len(words)}")
    if tag.type == "bool":
        return bool(words[0])
    if tag.type == "string":
        raw = _bytes(words, "big", tag.byte_order).split(b"\0", 1)[0]
        try:
            # Controllers pad with NULs or spaces; an order number is plain ASCII.
            return raw.decode("ascii").rstrip(" ")
        except UnicodeDecodeError:
            raise DecodeError(f"{tag.address}: not ASCII text ({raw.hex(' ')}): wrong register, "
                              "length or byte_order?") from None
    return struct.unpack(">" + _FORMATS[tag.type], _bytes(words, tag.word_order, tag.byte_order))[0]


def encode(tag: ModbusTag, value: int | float | str | bool) -> list[int] | list[bool]:
    """The registers (or the bit) that hold ``value`` as ``tag`` describes it."""
    if tag.type == "bool":
        return [bool(value)]
    if tag.type == "string":
        data = str(value).encode("ascii")
        if len(data) > 2 * tag.count:
            raise ValueError(f"{tag.address}: {value!r} needs more than {tag.count} registers")
        return _registers(data.ljust(2 * tag.count, b"\0"), "big", tag.byte_order)
    try:
        data = struct.pack(">" + _FORMATS[tag.type], value)
    except struct.error as exc:
        raise ValueError(f"{tag.address}: {value!r} does not fit: {exc}") from None
    return _registers(data, tag.word_order, tag.byte_order)


# --- grouping -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: Table
    start: int
    count: int
    tags: tuple[ModbusTag, ...]

    @property
    def address(self) -> str:
        return f"{self.table} {self.start}" if self.count == 1 else f"{self.table} {self.start}..{self.last}"

    @property
    def last(self) -> int:
        return self.start + self.count - 1

    def values(self, words: Sequence[int] | Sequence[bool]) -> list[tuple[ModbusTag, object]]:
        """Each tag with its value, or with the ``DecodeError`` that says why there is none."""
        out: list[tuple[ModbusTag, object]] = []
        for tag in self.tags:
            offset = tag.register - self.start
            try:
                out.append((tag, decode(tag, words[offset : offset + tag.count])))
            except DecodeError as exc:
                out.append((tag, exc))
        return out


def plan_reads(tags: Iterable[ModbusTag], *, max_gap: int = 8, max_count: int = MAX_REGISTERS_PER_READ) -> list[Read]:
    """As few reads as cover every tag, each within ``max_count`` registers and bridging
    gaps of at most ``max_gap`` registers. Bit tables get ×16 both (2000 bits at most).

    Greedy from the lowest address: a read that starts at the first tag not yet covered
    and takes every tag that still fits leaves no more for the reads after it than any
    other choice would. Raises ``ValueError`` for a tag wider than one read.
    """
    if max_gap < 0 or not 1 <= max_count <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"need max_gap >= 0 and 1 <= max_count <= {MAX_REGISTERS_PER_READ}")
    by_table: dict[str, list[ModbusTag]] = {}
    for tag in tags:
        by_table.setdefault(tag.table, []).append(tag)
    reads = []
    for table in TABLES:
        bits = table in BIT_TABLES
        limit = MAX_BITS_PER_READ if bits else max_count
        gap = max_gap * BITS_PER_REGISTER if bits else max_gap
        group: list[ModbusTag] = []
        end = -1  # last register of the read being planned
        for tag in sorted(by_table.get(table, ()), key=lambda t: (t.register, t.last)):
            if tag.count > limit:
                raise ValueError(f"{tag.machine} {tag.role}: {tag.address} is wider than one read ({limit})")
            if group and (tag.register - end - 1 > gap or max(end, tag.last) - group[0].register >= limit):
                reads.append(Read(table, group[0].register, end - group[0].register + 1, tuple(group)))
                group = []
            end = max(end, tag.last) if group else tag.last
            group.append(tag)
        if group:
            reads.append(Read(table, group[0].register, end - group[0].register + 1, tuple(group)))
    return reads


def one_read_per_tag(tags: Iterable[ModbusTag]) -> list[Read]:
    """The plan without grouping: what a naive poller sends (for comparison)."""
    return [Read(t.table, t.register, t.count, (t,)) for t in tags]
