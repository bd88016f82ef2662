"""What is wrong with an input file, as records: ``FileError`` and ``InputFileError``.

For: the one shape every problem of a hand-written file takes, whoever found it (the
reader, the schema, a loader's reference checks): ``file:line: key.path: message``, one
line each, in reading order. Must never: carry a problem without its file and line, or
print one over several lines (tools and people grep these).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A place in a document: the keys and list indices from its top, as pydantic spells it.
Loc = tuple[Any, ...]


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


def dotted(loc: Loc, leading: bool = False) -> str:
    """``("boms", "B", "items", 2, "qty")`` → ``boms.B.items[2].qty``."""
    text = "".join(f"[{p}]" if type(p) is int else f".{key_text(p)}" for p in loc)
    return text if leading else text.lstrip(".")


def key_text(key: Any) -> str:
    """A key as the file wrote it: ``~`` for null, ``true``/``false`` for booleans."""
    if key is None:
        return "~"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)
