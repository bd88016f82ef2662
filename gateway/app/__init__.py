"""The application layer: every operation the gateway offers a person, as one typed function.

The CLI calls these functions, and so does the HTTP API: one place validates the input
(known materials, locations, lots and orders; a quantity within its material's decimals)
and one set of messages explains a refusal. Each function takes an ``Engine`` opened with
``gateway.app.ledger.open_ledger`` and plain values or an input model, and returns a
pydantic model from ``gateway.app.models`` (Decimal stays Decimal; in JSON it is a string).

Postings stay in ``gateway.ledger``: a function here validates, calls the ledger function
that posts, and shapes its result. Every failure is one ``AppError`` (``kind`` not_found /
invalid / conflict / unavailable, a short ``title`` and a one-sentence ``detail``).

Never here: printing, typer or HTTP, reading the environment, or a posting path of its own.
"""

from gateway.app.errors import AppError

__all__ = ["AppError"]
