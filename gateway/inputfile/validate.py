"""Validate a read input file against its pydantic schema, keeping the part that is valid.

For: ``read_model`` (a file → ``Loaded``: the document, the valid model, every problem
at its line) and ``Loaded.require`` (the model, or ``InputFileError`` with every
problem). When the schema refuses the file, the broken entries are left out and the rest
validated again, so that a loader's reference checks still run on what is valid and the
person fixing the file sees all its problems in one go, not one per attempt.

Must never: raise for bad content (everything found is in ``Loaded.errors``); report a
value whose ``${NAME}`` could not be expanded a second time under the schema; return a
model from ``require`` while any problem is known.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.inputfile.errors import FileError, InputFileError, Loc, by_line
from gateway.inputfile.messages import describe, show
from gateway.inputfile.read import YamlDoc, read_yaml

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Loaded(Generic[M]):
    """What one input file yielded: its document, the valid part and every problem."""

    file: str
    doc: YamlDoc | None
    # The whole file when there are no errors; otherwise what validates once the broken
    # entries are left out (so reference checks can still run), or None.
    model: M | None
    errors: list[FileError]

    def require(self) -> M:
        """The model, if the file has no problem at all; else InputFileError with them all."""
        if self.errors or self.model is None:
            raise InputFileError(self.errors)
        return self.model


Check = Callable[[YamlDoc, M], list[FileError]]


Prepare = Callable[[YamlDoc], tuple[YamlDoc, list[FileError]]]


def read_model(path: str | os.PathLike[str], model: type[M], check: Check[M] | None = None,
               prepare: Prepare | None = None) -> Loaded[M]:
    """Read ``path``, validate it against ``model`` and run ``check`` on the valid part.

    ``prepare`` turns the document into the one validated (e.g. templates expanded),
    with the problems it found. Never raises for bad content: everything found is in
    the result's ``errors``.
    """
    doc, errors = read_yaml(path)
    file = os.fspath(path)
    if doc is None:
        return Loaded(file, None, None, errors)
    if prepare is not None:
        doc, prepared = prepare(doc)
        errors = errors + prepared
    if not isinstance(doc.data, dict):
        return Loaded(file, doc, None, errors + [_not_a_mapping(doc, model)])
    try:
        valid, schema = model.model_validate(doc.data), []
    except ValidationError as exc:
        valid, schema = _valid_part(model, doc.data, exc), _schema_errors(doc, model, exc)
    found = check(doc, valid) if check is not None and valid is not None else []
    return Loaded(file, doc, valid, by_line(errors + schema + found))


def _schema_errors(doc: YamlDoc, model: type[BaseModel], exc: ValidationError) -> list[FileError]:
    """One FileError per schema error, at its line; none at a value whose ${NAME} failed."""
    return [doc.error(i.loc, i.message, name_parent=i.at_parent) for i in describe(model, exc) if i.loc not in doc.unset]


def _not_a_mapping(doc: YamlDoc, model: type[BaseModel]) -> FileError:
    keys = ", ".join(model.model_fields)
    if doc.data is None:
        return FileError(doc.file, 1, "", f"the file is empty; expected the keys {keys}")
    return FileError(doc.file, 1, "", f"expected a mapping with the keys {keys}, got {show(doc.data)}")


def _valid_part(model: type[M], data: dict, exc: ValidationError) -> M | None:
    """What validates once the broken entries are left out, so that reference checks can
    still run on the rest. An unknown key alone costs nothing: only it is left out."""
    errors = exc.errors()
    extra = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
    other = [e["loc"] for e in errors if e["type"] != "extra_forbidden"]
    for attempt in (_drop_entries(_strip_keys(data, extra), other), _drop_entries(data, extra + other)):
        try:
            return model.model_validate(attempt)
        except ValidationError:
            continue
    return None


def _strip_keys(data: Any, locs: Iterable[Loc]) -> Any:
    for loc in locs:
        data = _strip_key(data, loc)
    return data


def _strip_key(node: Any, loc: Loc) -> Any:
    # Copies along the path only: the document's own data stays as read.
    if not loc or not isinstance(node, dict) or loc[0] not in node:
        return node  # e.g. a union tag in the loc: the fallback drops the entry
    if len(loc) == 1:
        return {k: v for k, v in node.items() if k != loc[0]}
    return {**node, loc[0]: _strip_key(node[loc[0]], loc[1:])}


def _drop_entries(data: dict, locs: Iterable[Loc]) -> dict:
    """``data`` less every entry of a top-level mapping that has an error in it.

    A top-level list with an error goes as a whole: dropping one row would shift the
    indices that later messages name.
    """
    drop_entries: dict[Any, set[Any]] = {}
    drop_keys: set[Any] = set()
    for loc in locs:
        if not loc or loc[0] not in data:
            continue
        if len(loc) > 1 and isinstance(data[loc[0]], dict):
            drop_entries.setdefault(loc[0], set()).add(loc[1])
        else:
            drop_keys.add(loc[0])
    return {
        key: {k: v for k, v in value.items() if k not in drop_entries[key]} if key in drop_entries else value
        for key, value in data.items()
        if key not in drop_keys
    }

