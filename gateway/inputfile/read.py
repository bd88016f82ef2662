"""Read a hand-written YAML file into plain data that remembers the line of every key.

For: ``read_yaml`` (a file → a ``YamlDoc``, and every problem of the reading as a
``FileError``). The text is parsed by ruamel.yaml's round-trip loader, whose tree knows
each key's line; a plain copy of it (dicts, lists, str, int, Decimal, bool, None) is
what the schemas validate, and ``YamlDoc.error(loc, …)`` finds the line of any loc in the
tree. Reading keeps names as written (``0010`` stays the text ``0010``) and numbers
exact (a ``Decimal``, never a binary float); it reports every key written twice at
once, with both lines; it expands ``${NAME}`` in string values from the environment (so
that passwords and hosts need not be written into the file); and it refuses a file
above ``GATEWAY_MAX_INPUT_MB`` or one whose aliases would multiply it, before building it.

Must never: let any exception escape for any file content, however malformed (every
problem is a ``FileError``); guess a value the file does not contain; write to the
file; expand a key (keys are names). It knows nothing about schemas or machines:
validating is ``gateway.inputfile.validate``'s.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from gateway.inputfile.errors import FileError, Loc, by_line, dotted, key_text
from gateway.inputfile.messages import show


# --- parsing: names as written, numbers exact ----------------------------------------


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


# --- the document and the line of every key -----------------------------------------


@dataclass(frozen=True, slots=True)
class YamlDoc:
    """A parsed file: the ruamel tree (knows lines) and a plain copy (for validation)."""

    file: str
    tree: Any  # CommentedMap / CommentedSeq / scalar / None, as ruamel built it
    data: Any  # the same content as plain dicts, lists, str, int, Decimal, bool, None
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

    def writes(self, loc: Loc) -> bool:
        """Whether the file itself writes ``loc`` (a key filled in later, e.g. from a template, is not)."""
        node = self.tree
        for part in loc:
            step = _step(node, part)
            if step is None:
                return False
            node = step[0]
        return True

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


def _step(node: Any, part: Any) -> tuple[Any, int | None, str] | None:
    """One level down: the child, its line if known, and how the path spells the step."""
    if isinstance(node, CommentedMap):
        key = _find_key(node, part)
        if key is _ABSENT:
            return None
        value = node[key]
        # A scalar's own line is where a wrong value is; a block's is where its key is.
        where = node.lc.value if not isinstance(value, (dict, list)) else node.lc.key
        return value, _lc_line(where, key), f".{key_text(key)}"
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


# --- reading a file: size, syntax, duplicate keys, aliases --------------------------


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
