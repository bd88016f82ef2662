"""Pydantic's validation errors in plain words, at the place in the file they are about.

For: turning each error pydantic reports against an input file's schema into an
``Issue``: the key path as the file spells it (union tags and pydantic's ``[key]``
markers taken out) and a message a person who wrote the file understands (``expected a
whole number, got 'abc'``, ``'unit32' is not one of uint16, uint32, uint64``, the
allowed keys for an unknown one). The wording follows pydantic's own advice for custom
messages: a template per error type (``_TEMPLATES``, ``_WORDS``). Also the words shared
by the loaders' own checks: ``show`` (a value as a message shows it) and ``unknown`` (a
dangling reference). Locating an issue at a line is ``gateway.inputfile.read``'s.

A union in a schema is discriminated (``Discriminator``): pydantic then reports only the
member the value was written as, and its tag in the loc names that member. A value
that fits no member is the discriminator's custom error ``wrong_shape`` with
``{"expected": "a mapping or text"}`` in its context.

Must never: show the value of a secret field (``SecretStr``, or marked ``HIDDEN``),
even where a validator's own wording quotes it; raise for any error pydantic reports.
"""

from __future__ import annotations

import re
import types
from collections import abc
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr, Tag, ValidationError

from gateway.inputfile.errors import Loc


class Hidden:
    """Field metadata (``Annotated[str, HIDDEN]``): messages never show the key's value.
    ``SecretStr`` fields are hidden without it."""

    def __repr__(self) -> str:
        return "HIDDEN"


HIDDEN = Hidden()
_MASK = "***"


class _Masked:
    """Stands for a hidden value: ``show`` prints it as ***."""


_MASKED = _Masked()

# The custom error of a discriminator whose value fits none of its members; its context
# says what would: ``{"expected": "a mapping or text"}``.
WRONG_SHAPE = "wrong_shape"


@dataclass(frozen=True, slots=True)
class Issue:
    """One schema error in the file's terms."""

    loc: Loc  # where in the file: pydantic's union tags and "[key]" markers removed
    message: str
    # A missing or unknown key is reported under the mapping that lacks or has it.
    at_parent: bool = False


def describe(model: type[BaseModel], exc: ValidationError) -> list[Issue]:
    """One Issue per error pydantic found validating against ``model``, in its order."""
    return [_issue(model, error) for error in exc.errors()]


def _issue(model: type[BaseModel], error: Any) -> Issue:
    loc, owner, hidden = _walk_schema(model, error["loc"])
    message = _message(error, owner, hidden)
    if error["loc"][-1:] == ("[key]",):
        message = f"invalid name: {message}"
    return Issue(loc, message, at_parent=error["type"] in ("missing", "extra_forbidden"))


def _walk_schema(model: type[BaseModel], raw: Loc) -> tuple[Loc, Any, bool]:
    """Follow pydantic's loc through the schema: the file's loc, the type owning the last
    part, and whether the value is (inside) a hidden field."""
    annotation: Any = model
    owner: Any = None
    loc: list[Any] = []
    hidden = False
    for part in raw:
        if part == "[key]":
            continue
        annotation = _unwrap(annotation)
        members = _union_members(annotation)
        if members:  # the part is the tag of the member tried, not a key of the file
            annotation = _member(members, part)
            continue
        owner = annotation
        loc.append(part)
        hidden = hidden or _is_hidden(annotation, part)
        annotation = _child_type(annotation, part)
    return tuple(loc), owner, hidden


def _is_hidden(owner: Any, part: Any) -> bool:
    field = owner.model_fields.get(part) if _is_model(owner) else None
    if field is None:
        return False
    secret = (SecretStr, SecretBytes)
    types_ = [_unwrap(field.annotation), *(_union_members(_unwrap(field.annotation)) or [])]
    return any(m is HIDDEN for m in field.metadata) or any(isinstance(t, type) and issubclass(t, secret)
                                                           for t in types_)


def _unwrap(annotation: Any) -> Any:
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        members = _union_members(annotation, keep_single=True)
        if members is not None and len(members) == 1:  # X | None is just X, maybe absent
            annotation = members[0]
            continue
        return annotation


def _union_members(annotation: Any, keep_single: bool = False) -> list[Any] | None:
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    members = [a for a in get_args(annotation) if a is not type(None)]
    return members if keep_single or len(members) > 1 else None


def _member(members: list[Any], tag: Any) -> Any:
    """The member of a discriminated union that ``tag`` names: ``Annotated[X, Tag(tag)]``."""
    for member in members:
        if get_origin(member) is Annotated and any(isinstance(m, Tag) and m.tag == tag for m in get_args(member)[1:]):
            return member
    return None  # not a schema this module knows: the rest of the loc is spelled as given


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _child_type(annotation: Any, part: Any) -> Any:
    if _is_model(annotation):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    args = get_args(annotation)
    if get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    if get_origin(annotation) in (list, tuple) and args:
        return args[0]
    return None


_WORDS = {
    "string": "text",
    "int": "a whole number",
    "float": "a number",
    "decimal": "a number",
    "bool": "true or false",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
    "list": "a list",
    "tuple": "a list",
    "date": "a date",
    "datetime": "a date and time",
}


def _expected(kind: str) -> str | None:
    for suffix in ("_type", "_parsing"):
        if kind.endswith(suffix):
            return _WORDS.get(kind.removesuffix(suffix), kind.removesuffix(suffix))
    return None


_TEMPLATES = {
    "int_from_float": "expected a whole number, got {got}",
    "int_parsing_size": "the number is too large, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "greater_than": "must be greater than {gt}, got {got}",
    "less_than_equal": "must be at most {le}, got {got}",
    "less_than": "must be less than {lt}, got {got}",
    "string_pattern_mismatch": "{got} does not match the pattern {pattern}",
    "finite_number": "must be a finite number, got {got}",
    "decimal_max_digits": "must have at most {max_digits} digits, got {got}",
    "decimal_max_places": "must have at most {decimal_places} decimal places, got {got}",
    "decimal_whole_digits": "must have at most {whole_digits} digits before the point, got {got}",
    "recursion_loop": "refers to itself",
    "invalid_key": "a key must be text",
    WRONG_SHAPE: "expected {expected}, got {got}",
}


class _Context(dict):
    def __missing__(self, key: str) -> str:  # a pydantic version that names its limits differently
        return "?"


def _message(error: Any, owner: Any, hidden: bool = False) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = _MASK if hidden else show(value)
    if kind == "missing":
        return f"missing required key '{error['loc'][-1]}'"
    if kind == "extra_forbidden":
        allowed = ", ".join(owner.model_fields) if _is_model(owner) else "none"
        return f"unknown key {show(error['loc'][-1])} (allowed: {allowed})"
    if kind == "literal_error":
        return f"{got} is not one of {', '.join(_choices(ctx.get('expected', '')))}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return _length_message(kind, ctx, value, got)
    word = _expected(kind)
    if word is not None:
        return f"expected {word}, got {got}{_quote_hint(kind, value)}"
    if kind in _TEMPLATES:
        limits = {k: show(v) if isinstance(v, (int, float, Decimal)) else v for k, v in ctx.items()}
        return _TEMPLATES[kind].format_map(_Context(limits, got=got))
    text = re.sub(r"^(Value error|Assertion failed), ", "", str(error.get("msg", kind)))
    if hidden and isinstance(value, (str, int, float, Decimal)) and str(value):
        text = text.replace(str(value), _MASK)  # a validator's own wording may quote it
    return text[:1].lower() + text[1:]


def _choices(expected: str) -> list[str]:
    # pydantic writes "'uint16', 'uint32' or 'uint64'"
    return [c.strip().strip("'") for c in re.split(r", | or ", expected) if c.strip()]


def _length_message(kind: str, ctx: dict, value: Any, got: str) -> str:
    unit = "characters" if isinstance(value, str) else "items"
    if kind.endswith("too_short"):
        least = ctx.get("min_length", 1)
        return "must not be empty" if str(least) == "1" else f"must have at least {least} {unit}"
    return f"must have at most {ctx.get('max_length')} {unit}, got {got}"


def _quote_hint(kind: str, value: Any) -> str:
    if kind == "string_type" and isinstance(value, (int, float, Decimal, date)):
        return " (write it in quotes to make it text)"
    return ""


def show(value: Any) -> str:
    """A value as a message shows it: text quoted, numbers bare, containers by kind."""
    if value is None:
        return "an empty value"
    if isinstance(value, _Masked):
        return _MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a limit of 0.0 reads as 0
    if isinstance(value, (int, float, Decimal)):
        return _clip(str(value))
    if isinstance(value, abc.Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, abc.Set):
        return "a set"
    return _clip(str(value))


def _clip(text: str, most: int = 60) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: most + 1])
    return text if len(text) <= most else text[: most - 3] + "..."


def unknown(what: str, name: str, known: Iterable[str], where: str = "", most: int = 10) -> str:
    """``unknown work center 'WC-X' in md.yaml (defined: WC-A, WC-B)`` for a dangling reference."""
    names = sorted(known)
    listed = ", ".join(names[:most]) + (", ..." if len(names) > most else "")
    place = f" in {where}" if where else ""
    return f"unknown {what} {show(name)}{place} ({'defined: ' + listed if names else 'none defined'})"
