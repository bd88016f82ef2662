"""Read a YAML input file and say what is wrong with it as ``file:line: key.path: message``.

The mapping and the master-data loaders both read files a person wrote by hand; this
module is the one place that turns such a file into plain Python data (for pydantic)
while keeping the line of every key (from ruamel.yaml's round-trip tree), and that turns
every problem into a ``FileError``: YAML syntax, duplicate keys, an empty file, schema
violations (rewritten from pydantic's wording into plain words with the allowed values)
and reference problems the loaders find afterwards. It also expands ``${NAME}`` in string
values from the environment (so that passwords and hosts need not be written into the
file), and refuses a file above ``GATEWAY_MAX_INPUT_MB`` or one whose aliases would
multiply it, before building it.

It must never: let any exception other than ``InputFileError`` escape for any file
content, however malformed; stop at the first problem when more can be found; guess a
value the file does not contain; write to the file; show the value of a key whose field
is secret (``SecretStr``, or marked ``HIDDEN``) in a message. It knows nothing about
machines or materials: which keys exist and which references must resolve is the
callers' business.
"""

from __future__ import annotations

import math
import os
import re
import types
import warnings
from collections import abc
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

Loc = tuple[Any, ...]
M = TypeVar("M", bound=BaseModel)


# --- the error records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileError:
    """One problem in one input file, at a 1-based line, under a dotted key path."""

    file: str  # as the user gave it: a relative path stays relative
    line: int
    path: str  # e.g. "machines.PRESS-01.counters.good.type"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        what = f"{self.path}: {self.message}" if self.path else self.message
        # One problem, one line: tools and people grep these.
        return f"{self.file}:{self.line}: " + " ".join(what.splitlines())


class InputFileError(Exception):
    """An input file (or several) cannot be used; carries every problem found."""

    def __init__(self, errors: Iterable[FileError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One ``file:line: path: message`` line per problem, in reading order."""
        return [str(e) for e in self.errors]


def by_line(errors: Iterable[FileError]) -> list[FileError]:
    """Errors in reading order; the sort is stable, so one line keeps its own order."""
    return sorted(errors, key=lambda e: (e.file, e.line))


# --- reading -------------------------------------------------------------------------


_ZERO_PADDED = re.compile(r"[-+]?0[0-9]+\Z")


def _int_or_name(constructor: RoundTripConstructor, node: ScalarNode) -> Any:
    # In this domain 0010 is an operation and 0001234 an order number: names whose
    # leading zeros matter, not the numbers 10 and 1234. Keep them as written; numeric
    # fields still parse the text.
    if _ZERO_PADDED.match(node.value):
        return str(node.value)
    return constructor.construct_yaml_int(node)


def _exact_number(constructor: RoundTripConstructor, node: ScalarNode) -> Any:
    # Quantities and rates are stock and money: keep the digits as written. Through a
    # binary float, 12.50000000000000000001 would silently become 12.5.
    try:
        return Decimal(node.value.replace("_", ""))
    except InvalidOperation:  # .inf, .nan: left to ruamel, the schemas refuse them
        return constructor.construct_yaml_float(node)


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor with ``_int_or_name``; a subclass, so that
    registering it leaves ruamel's own class (and every other YAML user) alone."""


_Constructor.add_constructor("tag:yaml.org,2002:int", _int_or_name)
_Constructor.add_constructor("tag:yaml.org,2002:float", _exact_number)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    # Duplicates are found on the node tree first, all of them, with both lines.
    yaml.allow_duplicate_keys = True
    return yaml


@dataclass(frozen=True, slots=True)
class YamlDoc:
    """A parsed file: the ruamel tree (knows lines) and a plain copy (for validation)."""

    file: str
    tree: Any  # CommentedMap / CommentedSeq / scalar / None, as ruamel built it
    data: Any  # the same content as plain dicts, lists, str, int, float, bool, None
    # Values whose ${…} could not be expanded (a variable not set, a malformed ${): reported
    # as that, not again as whatever the schema says about the unexpanded text.
    unset: frozenset[Loc] = frozenset()

    def error(self, loc: Loc, message: str, *, name_parent: bool = False) -> FileError:
        """A FileError at ``loc``; ``name_parent`` names the enclosing key (missing/unknown keys)."""
        line, path = self._find(loc)
        if name_parent:
            path = self._find(loc[:-1])[1]
        return FileError(self.file, line, path, message)

    def line(self, loc: Loc) -> int:
        return self._find(loc)[0]

    def keys_at(self, loc: Loc) -> set[str]:
        """The names written under ``loc`` (valid or not), as text: what a reference may name."""
        node = self.data
        for part in loc:
            node = node.get(part) if isinstance(node, dict) else None
        return {str(k) for k in node} if isinstance(node, dict) else set()

    def _find(self, loc: Loc) -> tuple[int, str]:
        # Walk as far as the file goes; a missing key stops at its parent, whose line is
        # where the key belongs. The path is spelled from the file's own keys.
        node, line, parts = self.tree, 1, list(loc)
        path = ""
        while parts:
            step = _step(node, parts[0])
            if step is None:
                break
            node, at, spelled = step
            line, path = at or line, path + spelled
            parts.pop(0)
        return line, (path + dotted(tuple(parts), leading=bool(path))).lstrip(".")


def dotted(loc: Loc, leading: bool = False) -> str:
    """``("boms", "B", "items", 2, "qty")`` → ``boms.B.items[2].qty``."""
    text = "".join(f"[{p}]" if type(p) is int else f".{_key_text(p)}" for p in loc)
    return text if leading else text.lstrip(".")


def _key_text(key: Any) -> str:
    if key is None:
        return "~"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _step(node: Any, part: Any) -> tuple[Any, int | None, str] | None:
    """One level down: the child, its line if known, and how the path spells the step."""
    if isinstance(node, CommentedMap):
        key = _find_key(node, part)
        if key is _ABSENT:
            return None
        value = node[key]
        # A scalar's own line is where a wrong value is; a block's is where its key is.
        where = node.lc.value if not isinstance(value, (dict, list)) else node.lc.key
        return value, _lc_line(where, key), f".{_key_text(key)}"
    if isinstance(node, CommentedSeq) and type(part) is int and 0 <= part < len(node):
        return node[part], _lc_line(node.lc.item, part), f"[{part}]"
    return None


_ABSENT = object()


def _find_key(node: CommentedMap, part: Any) -> Any:
    try:
        if part in node:
            return part
    except TypeError:  # an unhashable part never names a key
        return _ABSENT
    # Validated names are text; the file may have written them as numbers.
    return next((k for k in node if str(k) == str(part)), _ABSENT)


def _lc_line(lookup: Any, key: Any) -> int | None:
    try:
        return lookup(key)[0] + 1
    except (KeyError, IndexError, TypeError):  # keys pulled in by a merge (<<) have no line
        return None


def read_yaml(path: str | os.PathLike[str]) -> tuple[YamlDoc | None, list[FileError]]:
    """Parse one file; the document is None when it could not be read at all."""
    file = os.fspath(path)
    text, problem = _read_text(file)
    if problem is not None:
        return None, [problem]
    tree, errors = _parse(file, text)
    if errors and tree is _ABSENT:
        return None, errors
    data, problem = _plain_or_error(file, tree)
    if problem is not None:
        return None, errors + [problem]
    expansion = _Expansion(YamlDoc(file, tree, data))
    data = expansion.run()
    return YamlDoc(file, tree, data, frozenset(expansion.unset)), by_line(errors + expansion.errors)


MAX_INPUT_MB_VARIABLE = "GATEWAY_MAX_INPUT_MB"
DEFAULT_MAX_INPUT_MB = 10
MB = 1024 * 1024


def max_input_megabytes() -> float:
    """The size above which an input file is refused; ValueError if the variable is nonsense."""
    text = os.environ.get(MAX_INPUT_MB_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_MB
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not (megabytes > 0 and math.isfinite(megabytes)):
        raise ValueError(f"{MAX_INPUT_MB_VARIABLE} must be a number of megabytes greater than 0, got {show(text)}")
    return megabytes


def _read_text(file: str) -> tuple[str, FileError | None]:
    # Parsing keeps every line of the file: 50 MB of YAML took minutes and gigabytes.
    # Refused before parsing, and read no further than the limit (a named pipe or
    # /dev/zero never ends).
    try:
        megabytes = max_input_megabytes()
    except ValueError as exc:
        return "", FileError(file, 1, "", str(exc))
    limit = int(megabytes * MB)
    try:
        with open(file, "rb") as stream:
            raw = stream.read(limit + 1)
            if len(raw) > limit:
                return "", _too_big(file, os.fstat(stream.fileno()).st_size, megabytes)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return "", FileError(file, 1, "", f"cannot read the file: {getattr(exc, 'strerror', None) or exc}")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        return "", FileError(file, line, "", f"not UTF-8 text (byte 0x{bad}); save the file as UTF-8")


def _too_big(file: str, size: int, megabytes: float) -> FileError:
    size_mb = size / MB
    # A pipe or a device states no size; only that it is bigger.
    known = size_mb > megabytes
    shown = "" if not known else f"{size_mb:.1f} MB, " if round(size_mb, 1) > megabytes else f"{size} bytes, "
    enough = math.ceil(size_mb) + 1 if known else math.ceil(2 * megabytes)
    return FileError(file, 1, "", (
        f"the file is {shown}above the limit of {megabytes:g} MB for an input file; raise the limit with "
        f"the environment variable {MAX_INPUT_MB_VARIABLE} (e.g. {MAX_INPUT_MB_VARIABLE}={enough})"))


def _parse(file: str, text: str) -> tuple[Any, list[FileError]]:
    yaml = _yaml()
    try:
        with warnings.catch_warnings():
            # e.g. an anchor defined twice: legal YAML, and not worth a line on stderr
            warnings.simplefilter("ignore")
            check = _NodeCheck(file)
            check.visit(yaml.compose(text), (), 1)
            if check.cycles:  # ruamel would quietly make the inner reference null
                return _ABSENT, check.cycles
            if check.bomb is not None:  # building it would take the memory of the whole machine
                return _ABSENT, [check.bomb]
            return yaml.load(text), by_line(check.duplicates)
    except MarkedYAMLError as exc:
        return _ABSENT, [_syntax_error(file, exc)]
    except ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        return _ABSENT, [FileError(file, line, "", f"character U+{code:04X} is not allowed in YAML")]
    except RecursionError:
        return _ABSENT, [FileError(file, 1, "", "nested too deeply to read")]
    except (YAMLError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError) as exc:
        # ruamel's own failures on junk carry no position; they are still a problem of
        # this file, not of the program.
        return _ABSENT, [_unplaced(file, text, exc)]


_LONG_NUMBER = re.compile(r"[0-9]{4000,}")


def _unplaced(file: str, text: str, exc: Exception) -> FileError:
    # Python refuses to read integers of thousands of digits (int_max_str_digits).
    long_number = _LONG_NUMBER.search(text)
    if isinstance(exc, ValueError) and long_number is not None:
        line = text.count("\n", 0, long_number.start()) + 1
        return FileError(file, line, "", "a number with thousands of digits cannot be read")
    return FileError(file, 1, "", f"cannot read the YAML: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _syntax_error(file: str, exc: MarkedYAMLError) -> FileError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem = exc.problem or exc.context or "invalid YAML"
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    started = exc.context_mark
    if context and started is not None and started.line + 1 != line:
        # The mistake is often where the construct started, e.g. a brace never closed.
        context = f" ({exc.context}, which started at line {started.line + 1})"
    return FileError(file, line, "", f"YAML syntax: {problem}{context}")


# Values that aliases (*name, and merge keys <<: *name) may add to a file. A plant's
# templates add a few per machine; "billion laughs" nests aliases of aliases so that a
# few lines stand for billions of values, which ruamel would build and pydantic walk.
MAX_ALIAS_VALUES = 1_000_000


class _NodeCheck:
    """What only the node tree shows: keys written twice, aliases inside themselves, and
    aliases that multiply the file (counted on the tree, where they are still shared)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.duplicates: list[FileError] = []
        self.cycles: list[FileError] = []
        self.bomb: FileError | None = None
        self._open: set[int] = set()
        self._size: dict[int, int] = {}  # aliases share nodes: each is checked once
        self._added = 0  # values the aliases seen so far add

    def visit(self, node: Node | None, loc: Loc, line: int) -> int:
        """Check ``node``; how many values it stands for, every alias in it expanded."""
        if id(node) in self._open:
            message = "an alias (*name) refers to a value that contains it"
            self.cycles.append(FileError(self.file, line, dotted(loc), message))
            return 0
        if not isinstance(node, (MappingNode, SequenceNode)):
            return 1
        if id(node) in self._size:  # an alias: a second use of a checked node
            self._alias(self._size[id(node)], loc, line)
            return self._size[id(node)]
        self._open.add(id(node))
        size = 1
        if isinstance(node, MappingNode):
            self.duplicates.extend(_repeated_keys(self.file, node, loc))
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else "?"
                size += 1 + self.visit(value, loc + (name,), key.start_mark.line + 1)
        else:
            for i, item in enumerate(node.value):
                # An alias is its anchor's node, marked where the anchor is: the list's line is nearer.
                at = line if id(item) in self._size or id(item) in self._open else item.start_mark.line + 1
                size += self.visit(item, loc + (i,), at)
        self._open.discard(id(node))
        self._size[id(node)] = size
        return size

    def _alias(self, size: int, loc: Loc, line: int) -> None:
        self._added += size
        if self._added > MAX_ALIAS_VALUES and self.bomb is None:
            self.bomb = FileError(self.file, line, dotted(loc), (
                f"aliases (*name) make this file more than {MAX_ALIAS_VALUES} values large "
                f"(this one alone stands for {size}); write the values out instead of nesting aliases"))


def _repeated_keys(file: str, node: MappingNode, loc: Loc) -> Iterator[FileError]:
    keys = ((k.value, k.start_mark.line + 1) for k, _ in node.value if isinstance(k, ScalarNode))
    for name, line, first in repeats((name, line) for name, line in keys if name != "<<"):
        yield FileError(file, line, dotted(loc), f"duplicate key '{name}' (first at line {first})")


def repeats(entries: Iterable[tuple[Hashable, Any]]) -> Iterator[tuple[Hashable, Any, Any]]:
    """``(key, place, first place)`` for every key seen before, in order."""
    first: dict[Hashable, Any] = {}
    for key, place in entries:
        if key in first:
            yield key, place, first[key]
        else:
            first[key] = place


# --- the plain copy ------------------------------------------------------------------


def _plain_or_error(file: str, tree: Any) -> tuple[Any, FileError | None]:
    try:
        return _plain(tree, {}), None
    except RecursionError:
        return None, FileError(file, 1, "", "nested too deeply to read")


def _plain(node: Any, done: dict[int, Any]) -> Any:
    """Plain containers and scalars; aliases stay shared, so alias bombs stay small."""
    if not isinstance(node, (dict, list)):
        return _plain_scalar(node)
    if id(node) not in done:
        if isinstance(node, dict):
            done[id(node)] = {_plain_scalar(k): _plain(v, done) for k, v in node.items()}
        else:
            done[id(node)] = [_plain(v, done) for v in node]
    return done[id(node)]


def _plain_scalar(value: Any) -> Any:
    # ruamel's scalar subclasses carry formatting; validation wants the bare value.
    if isinstance(value, (bool, ScalarBoolean)):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, TaggedScalar):
        return str(value.value)
    return value


# --- ${NAME} from the environment ----------------------------------------------------

# ${NAME} is a variable; $${ is a literal ${; any other ${ is a mistake (a typo such as
# ${PLC-HOST} must not silently become part of a host name or a password).
_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


class _Expansion:
    """The document's data with ``${NAME}`` in every string value replaced from the
    environment, and an error at each value naming a variable that is not set.

    Keys are names, not values: they are never expanded. Containers an alias shares are
    expanded once and stay shared (an alias bomb must not grow here either).
    """

    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.errors: list[FileError] = []
        self.unset: set[Loc] = set()
        self._done: dict[int, Any] = {}

    def run(self) -> Any:
        try:
            return self._value(self.doc.data, ())
        except RecursionError:  # the plain copy was built at this depth; kept total anyway
            self.errors.append(FileError(self.doc.file, 1, "", "nested too deeply to read"))
            return self.doc.data

    def _value(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, str):
            return self._text(value, loc) if "$" in value else value
        if not isinstance(value, (dict, list)):
            return value
        if id(value) not in self._done:
            if isinstance(value, dict):
                self._done[id(value)] = {k: self._value(v, loc + (k,)) for k, v in value.items()}
            else:
                self._done[id(value)] = [self._value(v, loc + (i,)) for i, v in enumerate(value)]
        return self._done[id(value)]

    def _text(self, text: str, loc: Loc) -> str:
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if match.group(0) == "$${":
                return "${"
            if name is None:
                problems.append("'${' must start a variable ${NAME} (letters, digits and _); write $${ for a literal ${")
                return match.group(0)
            if name not in os.environ:
                problems.append(f"environment variable {name} is not set")
                return match.group(0)
            return os.environ[name]

        expanded = _VARIABLE.sub(replace, text)
        self.errors += [self.doc.error(loc, p) for p in dict.fromkeys(problems)]
        if problems:
            self.unset.add(loc)
        return expanded


# --- validating against a schema -----------------------------------------------------


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
        valid, schema = _valid_part(model, doc.data, exc), schema_errors(doc, model, exc)
    found = check(doc, valid) if check is not None and valid is not None else []
    return Loaded(file, doc, valid, by_line(errors + schema + found))


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


# --- pydantic errors in plain words --------------------------------------------------


class Hidden:
    """Field metadata (``Annotated[str, HIDDEN]``): messages never show the key's value.
    ``SecretStr`` fields are hidden without it."""

    def __repr__(self) -> str:
        return "HIDDEN"


HIDDEN = Hidden()
_MASK = "***"


class _Masked:
    """Stands for a hidden value in an issue: ``show`` prints it as ***."""


_MASKED = _Masked()


@dataclass(frozen=True, slots=True)
class _Issue:
    loc: Loc  # where in the file: pydantic's union tags and "[key]" markers removed
    kind: str  # pydantic's error type
    message: str
    value: Any
    union: Loc | None = None  # the union this was reported under, if any
    branch: str = ""  # the union member it was tried against


def schema_errors(doc: YamlDoc, model: type[BaseModel], exc: ValidationError) -> list[FileError]:
    """One FileError per pydantic error, except that a failed union says it once."""
    issues = [_issue(model, e) for e in exc.errors()]
    return [
        doc.error(i.loc, i.message, name_parent=i.kind in ("missing", "extra_forbidden"))
        for i in _settle_unions(issues)
        if i.loc not in doc.unset
    ]


def _issue(model: type[BaseModel], error: Any) -> _Issue:
    loc, owner, union, branch, hidden = _walk_schema(model, error["loc"])
    message = _message(error, owner, hidden)
    if error["loc"][-1:] == ("[key]",):
        message = f"invalid name: {message}"
    return _Issue(loc, error["type"], message, _MASKED if hidden else error.get("input"), union, branch)


def _walk_schema(model: type[BaseModel], raw: Loc) -> tuple[Loc, Any, Loc | None, str, bool]:
    """Follow pydantic's loc through the schema: the file's loc, the type owning the last
    part, where a union tag (a member's name, not a key of the file) was, and whether
    the value is (inside) a hidden field."""
    annotation: Any = model
    owner: Any = None
    loc: list[Any] = []
    union: Loc | None = None
    branch = ""
    hidden = False
    for part in raw:
        if part == "[key]":
            continue
        annotation = _unwrap(annotation)
        members = _union_members(annotation)
        if members:
            union, branch = (tuple(loc), str(part)) if union is None else (union, branch)
            annotation = _member(members, part)
            continue
        owner = annotation
        loc.append(part)
        hidden = hidden or _is_hidden(annotation, part)
        annotation = _child_type(annotation, part)
    return tuple(loc), owner, union, branch, hidden


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
    # Members of a discriminated union come wrapped: Annotated[Model, Tag(...)].
    named = [m for m in members if isinstance(_unwrap(m), type) and _unwrap(m).__name__ == tag]
    plain = [m for m in members if not _is_model(_unwrap(m))]
    return (named or plain or members)[0]


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


def _settle_unions(issues: list[_Issue]) -> list[_Issue]:
    """Keep the member the value was meant for; if none fits, say what would."""
    plain = [i for i in issues if i.union is None]
    groups: dict[Loc, list[_Issue]] = {}
    for issue in issues:
        if issue.union is not None:
            groups.setdefault(issue.union, []).append(issue)
    return plain + [kept for loc, group in groups.items() for kept in _settle_union(loc, group)]


def _settle_union(loc: Loc, group: list[_Issue]) -> list[_Issue]:
    branches: dict[str, list[_Issue]] = {}
    for issue in group:
        branches.setdefault(issue.branch, []).append(issue)
    # A member that failed only because the value has another shape was not meant.
    meant = [b for b in branches.values() if not any(i.loc == loc and _is_shape(i.kind) for i in b)]
    if meant:
        return meant[0]
    words = [w for b in branches.values() for i in b[:1] if (w := _expected(i.kind))]
    message = f"expected {' or '.join(dict.fromkeys(words))}, got {show(group[0].value)}"
    return [_Issue(loc, "union", message, group[0].value)]


def _is_shape(kind: str) -> bool:
    return kind.endswith(("_type", "_parsing")) or kind == "literal_error"


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
