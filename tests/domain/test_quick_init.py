"""``records.quick_init``: the records built for every counter change behave exactly as the
dataclasses they are, only their ``__init__`` is another.

Each decorated class is compared with a twin made by ``dataclasses.make_dataclass`` from the same
fields (the ``__init__`` that ``dataclass`` writes): same values stored, same defaults, same
errors for wrong arguments, still frozen, and ``replace``, pickling, equality and hashing as
before.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.domain.confirming import Pending
from gateway.domain.records import CounterState, Increment, Position, quick_init

T = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
P1, P2 = Position(0, 10), Position(1, 3)

# Each class with positional arguments for every field, and for the fields without a default only.
CASES = {
    Position: ((2, 7), (2, 7)),
    CounterState: (("M1", "good", P1, T), ("M1", "good", P1, T)),
    Increment: (("M1", "good", 5, P1, P2, T, 3), ("M1", "good", 5, P1, P2, T)),
    Pending: (("M1", "A", "0010", Decimal(5), Decimal(1), (("good", P1),), (("good", P2),), T, T, T, ("S1",)),
              ("M1", "A", "0010", Decimal(5), Decimal(1), (("good", P1),), (("good", P2),), T, T, T)),
}


def _twin(cls: type) -> type:
    """The same fields in a class whose ``__init__`` is the one ``dataclass(frozen=True)`` writes."""
    return dataclasses.make_dataclass(
        f"{cls.__name__}Twin",
        [(f.name, f.type, f) if f.default is not dataclasses.MISSING else (f.name, f.type)
         for f in dataclasses.fields(cls)],
        frozen=True, slots=True)


def _values(obj: object) -> tuple:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_stores_what_the_dataclass_init_stores(cls):
    full, required = CASES[cls]
    twin = _twin(cls)
    assert _values(cls(*full)) == _values(twin(*full)) == full
    assert _values(cls(*required)) == _values(twin(*required))  # the defaults
    names = [f.name for f in dataclasses.fields(cls)]
    assert _values(cls(**dict(zip(names, full)))) == full  # by keyword
    assert list(inspect.signature(cls).parameters) == names


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_wrong_arguments_fail_as_before(cls):
    full, required = CASES[cls]
    for args, kwargs in (((), {}), (full + ("extra",), {}), (required, {"nonsense": 1}),
                         (full, {dataclasses.fields(cls)[0].name: full[0]})):
        with pytest.raises(TypeError):
            cls(*args, **kwargs)
        with pytest.raises(TypeError):
            _twin(cls)(*args, **kwargs)


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_still_frozen_and_a_value(cls):
    full, _ = CASES[cls]
    obj = cls(*full)
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, full[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(obj, first)
    assert obj == cls(*full) and hash(obj) == hash(cls(*full))
    assert pickle.loads(pickle.dumps(obj)) == obj
    changed = dataclasses.replace(obj, **{first: full[1] if cls is Position else "M2"})
    assert changed != obj and type(changed) is cls
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_refuses_what_it_cannot_build_the_same():
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: tuple = dataclasses.field(default_factory=tuple)

    @dataclasses.dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = dataclasses.field(kw_only=True)

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self):
            pass

    for cls in (NoSlots, NotFrozen, Factory, KeywordOnly, PostInit):
        with pytest.raises(TypeError):
            quick_init(cls)
