"""The audit trail: read it (``gateway report audit``, ``GET /api/v1/audit``), and the actors of the front ends.

Every manual operation in this package takes the ``Actor`` who asked for it; the ledger
function that posts writes the audit row in its own transaction (``gateway.ledger.audit``).
Here: reading the trail, and building the actor of a command line with nothing secret in it.

Never here: printing, or writing the trail (only the ledger's manual transactions do).
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime

from gateway.app.errors import AppError
from gateway.app.ledger import masked, on_ledger
from gateway.app.models import AuditEntry
from gateway.ledger import audit
from gateway.ledger.audit import Actor

__all__ = ["Actor", "cli_actor", "command_line", "list_audit"]

# Options whose value is a database URL: shown with the password as ***.
_URL_OPTIONS = ("--db",)


@on_ledger
def list_audit(engine, *, since: datetime | None = None, actor: str | None = None, order: str | None = None,
               last: int | None = None) -> list[AuditEntry]:
    """The audit trail, oldest first: since a time, of one actor, of one order (the ``last`` rows, if given)."""
    if last is not None and last < 1:
        raise AppError("invalid", f"--last must be 1 or more, got {last}")
    return [AuditEntry(id=r.id, at=r.at, actor=r.actor, actor_kind=r.actor_kind, host=r.host, via=r.via,
                       action=r.action, reason=r.reason, order=r.order, subject=r.subject, postings=list(r.postings),
                       detail=r.detail)
            for r in audit.read(engine, since=since, actor=actor, order=order, last=last)]


def cli_actor(argv: list[str]) -> Actor:
    """The actor of a command: the OS user, this host, the command line without secrets."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container's bare uid)
        user = f"uid {os.getuid()}"
    return Actor(name=user, kind="cli", host=socket.gethostname(), via=command_line(argv))


def command_line(argv: list[str]) -> str:
    """``gateway …`` as typed, with the password of every database URL shown as ``***``."""
    shown = ["gateway"]
    hide_next = False
    for arg in argv[1:]:
        if hide_next:
            shown.append(masked(arg))
            hide_next = False
        elif arg in _URL_OPTIONS:
            shown.append(arg)
            hide_next = True
        elif "=" in arg and arg.split("=", 1)[0] in _URL_OPTIONS:
            option, value = arg.split("=", 1)
            shown.append(f"{option}={masked(value)}")
        elif "://" in arg:  # a URL given any other way
            shown.append(masked(arg))
        else:
            shown.append(arg)
    return " ".join(shown)
