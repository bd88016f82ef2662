"""The one exception of the application layer: what went wrong, for a person, in one sentence.

``kind`` tells a front end how to report it (the CLI: the detail on stderr and exit 1;
the HTTP API: not_found 404, invalid 422, conflict 409, unavailable 503). ``detail`` is the
whole sentence a person reads, with what to do; it never holds a password.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["not_found", "invalid", "conflict", "unavailable"]

TITLES: dict[str, str] = {
    "not_found": "not found",
    "invalid": "invalid input",
    "conflict": "refused by the ledger",
    "unavailable": "ledger unavailable",
}


class AppError(Exception):
    """A request the gateway cannot carry out; nothing was written."""

    def __init__(self, kind: Kind, detail: str, *, title: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.title = title or TITLES[kind]

    def __repr__(self) -> str:
        return f"AppError({self.kind!r}, {self.detail!r})"


def not_found(detail: str) -> AppError:
    return AppError("not_found", detail)


def invalid(detail: str) -> AppError:
    return AppError("invalid", detail)


def conflict(detail: str) -> AppError:
    return AppError("conflict", detail)
