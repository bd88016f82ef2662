"""The command line (the face): ``gateway run | demo | validate | …`` and every command on the ledger.

One module per group of commands (``main`` holds the typer app and the core commands; ``common``
what they share; ``tables`` how answers are printed; ``http`` the ``--http`` options and ``gateway
token``; ``live`` the PLC reads of ``validate --live``). Thin: a command parses its arguments, calls
the application layer (``gateway.app``) or the service, and prints the answer. It never decides
anything about counting or postings.
"""

from gateway.cli.main import app

__all__ = ["app"]
